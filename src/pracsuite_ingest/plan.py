"""The plan a dry run prints: what a real run would send, reconcile, skip, refuse, and
how many API calls and hours that takes at the rate it would keep.

Pure: it reads the report document of the dry run (every item `pending`, `skipped`
or `invalid`), and returns text for stdout. `planned_rate` reads the rate "auto" learned
in an earlier run from its report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pracsuite_ingest.plural import counted, plural
from pracsuite_ingest.report_html import size_text
from pracsuite_ingest.visible import visible

if TYPE_CHECKING:
    from pracsuite_ingest.settings import Settings

MAX_CLIENT_LINES = 25
RECONCILE_MARK = "would be reconciled"  # run_events.py's error for such a dry-run item
DUPLICATE_MARK = "same client, file name and content"  # admission.py's reason
# API calls the flow needs (bench/calls_per_file.py measures it: 2.36 per file on a
# practice-shaped input): a presign per file sent, a record look-up (presign_url) per file
# claimed, and about two reads of each patient's attachment list
CALLS_PER_FILE = 2
LIST_READS_PER_PATIENT = 2
START_RPS = 3.0  # rate_gate.START_RPS: where "auto" starts when nothing was learned
REPORTS_LOOKED_AT = 5  # the newest reports searched for a rate "auto" learned


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


def api_need(files: int, reconcile: int, patients: int) -> int:
    """API calls a run needs for `files` to send, `reconcile` to ask about, over
    `patients` patients: a presign per file sent, a record look-up per file, two list
    reads per patient (more pages for a patient holding hundreds of records)."""
    return files + CALLS_PER_FILE // 2 * (files + reconcile) + LIST_READS_PER_PATIENT * patients


@dataclass(frozen=True)
class PlannedRate:
    requests_per_second: float
    source: str  # where the figure comes from, in the operator's words


def planned_rate(settings: Settings) -> PlannedRate:
    """The rate a run would keep: the configured number, else what "auto" learned in the
    newest run that reported one (report.dir), else where "auto" starts."""
    rps = settings.api.requests_per_second
    fleet = " for the whole fleet (api.shared_limit)" if settings.api.shared_limit else ""
    if not isinstance(rps, str):
        return PlannedRate(rps, f"api.requests_per_second{fleet}")
    learned = learned_rate(Path(settings.report.dir))
    if learned is not None:
        return PlannedRate(learned[0], f"where \"auto\" settled in run {learned[1]}")
    return PlannedRate(min(START_RPS, settings.api.max_requests_per_second),
                       "where \"auto\" starts (no earlier run learned a rate; it climbs)")


def learned_rate(report_dir: Path) -> tuple[float, str] | None:
    """The rate "auto" settled at in the newest report that has one (run ids sort by time)."""
    try:
        reports = sorted((p for p in report_dir.glob("*.json") if p.name != "latest.json"),
                         reverse=True)[:REPORTS_LOOKED_AT]
    except OSError:
        return None
    for path in reports:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        pace = doc.get("api") if isinstance(doc, dict) else None
        if isinstance(pace, dict) and pace.get("mode") == "auto":
            rate = pace.get("requests_per_second")
            if isinstance(rate, int | float) and rate > 0:
                return float(rate), visible(str(doc.get("run_id", path.stem)))
    return None


def need_text(calls: int, rate: PlannedRate) -> str:
    """'  API calls  about 2,400 at 3.00 requests/s (...): at least 13 min'."""
    return (f"  API calls  about {calls:,}; at {rate.requests_per_second:.2f} requests/s "
            f"({rate.source}) they take at least "
            f"{duration_text(calls / rate.requests_per_second)} "
            f"({calls / rate.requests_per_second / 3600:.1f} h)")


def plan_text(doc: Mapping[str, Any], bytes_per_second: int = 0,
              rate: PlannedRate | None = None) -> str:
    """The dry run's plan; with a bandwidth cap, how long its uploads take at least; with
    `rate`, the API calls it needs and how long they take at that rate."""
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
    asked = sum(1 for p in plans.values() if p.send or p.reconcile)
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
        *([need_text(api_need(send, reconcile, asked), rate)] if rate is not None else []),
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
