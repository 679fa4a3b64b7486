"""The plan a dry run prints: what a real run would send, reconcile, skip, refuse.

Pure: it reads the report document of the dry run (every item `pending`, `skipped`
or `invalid`), and returns text for stdout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pracsuite_ingest.plural import counted, plural
from pracsuite_ingest.report_html import size_text
from pracsuite_ingest.visible import visible

MAX_CLIENT_LINES = 25
RECONCILE_MARK = "would be reconciled"  # run_events.py's error for such a dry-run item
DUPLICATE_MARK = "same client, file name and content"  # admission.py's reason


@dataclass
class ClientPlan:
    send: int = 0
    send_bytes: int = 0
    reconcile: int = 0
    skip: int = 0
    invalid: int = 0
    empty: int = 0  # of `send`: 0-byte files, which PracSuite may refuse (refusals.py)


def duration_text(seconds: float) -> str:
    """'3 h 20 min', '12 min', '40 s'."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 60} min" if s >= 60 else f"{s} s"


def _kind(item: Mapping[str, Any]) -> str:
    status, error = item["status"], str(item.get("error") or "")
    if status == "pending":
        return "reconcile" if RECONCILE_MARK in error else "send"
    return "skip" if status == "skipped" else status


def plan_of(items: list[Mapping[str, Any]]) -> dict[str, ClientPlan]:
    """client id -> what a real run would do with its rows."""
    plans: dict[str, ClientPlan] = {}
    for it in items:
        plan = plans.setdefault(str(it.get("client_id") or "(none)"), ClientPlan())
        kind = _kind(it)
        if kind == "send":
            plan.send += 1
            plan.send_bytes += int(it.get("size") or 0)
            plan.empty += 1 if it.get("size") == 0 else 0
        elif kind == "reconcile":
            plan.reconcile += 1
        elif kind == "skip":
            plan.skip += 1
        elif kind == "invalid":
            plan.invalid += 1
    return plans


def limits_text(requests_per_second: float | str, max_requests_per_second: float,
                bytes_per_second: int) -> str:
    """The pace a run keeps, in a line: the API rate and the bandwidth cap."""
    rate = (f"auto (from 3/s, at most {max_requests_per_second:g}/s)"
            if isinstance(requests_per_second, str) else f"{requests_per_second:g}/s")
    cap = f"{size_text(bytes_per_second)}/s" if bytes_per_second else "no cap"
    return (f"api.requests_per_second = {rate}; upload.max_bytes_per_second = {cap} "
            "(all uploads together)")


def plan_text(doc: Mapping[str, Any], bytes_per_second: int = 0) -> str:
    """The dry run's plan; with a bandwidth cap, how long its uploads take at least."""
    items = doc["items"]  # may be streamed from the state file: iterated twice, never kept
    plans = plan_of(items)
    send = sum(p.send for p in plans.values())
    send_bytes = sum(p.send_bytes for p in plans.values())
    reconcile = sum(p.reconcile for p in plans.values())
    invalid = sum(p.invalid for p in plans.values())
    duplicates = sum(1 for it in items
                     if it["status"] == "skipped" and DUPLICATE_MARK in str(it.get("error")))
    done = sum(p.skip for p in plans.values()) - duplicates
    sending_clients = sum(1 for p in plans.values() if p.send)
    empty = sum(p.empty for p in plans.values())
    lines = [
        "dry run: nothing was sent. A real run would:",
        f"  send       {send:>7,} {plural('file', send)}, {size_text(send_bytes)}, for "
        f"{counted(sending_clients, 'client')}",
        f"  skip       {done:>7,} {plural('file', done)} already validated by an earlier run",
        f"  skip       {duplicates:>7,} {plural('row', duplicates)} repeating an earlier row of "
        "this input",
        f"  reconcile  {reconcile:>7,} {plural('file', reconcile)} an earlier run uploaded "
        "(asked about, not re-sent)",
        f"  refuse     {invalid:>7,} invalid {plural('row', invalid)} (the report says why; fix "
        "them first)",
        *([f"  of which  {empty:>7,} empty (0-byte) {plural('file', empty)}: PracSuite may refuse "
           "them (nothing says either way; then they stay `missing`); "
           "upload.empty_files = \"refuse\" leaves them out, invalid"] if empty else []),
        *([f"  at upload.max_bytes_per_second = {size_text(bytes_per_second)}/s the uploads "
           f"take at least {duration_text(send_bytes / bytes_per_second)}"]
          if bytes_per_second else []),
        "",
        f"  {'client':<16} {'send':>7} {'bytes':>10} {'skip':>7} {'reconcile':>9} "
        f"{'invalid':>7}",
    ]
    ordered = sorted(plans.items(), key=lambda kv: (-kv[1].send_bytes, kv[0]))
    for client, p in ordered[:MAX_CLIENT_LINES]:
        lines.append(f"  {client[:16]:<16} {p.send:>7,} {size_text(p.send_bytes):>10} "
                     f"{p.skip:>7,} {p.reconcile:>9,} {p.invalid:>7,}")
    if len(ordered) > MAX_CLIENT_LINES:
        lines.append(f"  ... and {len(ordered) - MAX_CLIENT_LINES:,} more clients "
                     "(every one is in the report)")
    # Client ids come from the input: shown, never obeyed by the terminal.
    return visible("\n".join(lines), keep_lines=True)
