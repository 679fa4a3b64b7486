"""JSON / CSV / HTML report and the stdout summary, derived from the state file only."""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pracsuite_ingest.models import Stage, Status
from pracsuite_ingest.state import ItemRecord, State

ITEM_COLUMNS = ("client_id", "path", "file_name", "size", "sha256", "status", "attachment_id",
                "key", "error", "attempts", "extra")

_STAGE_STATUS = {
    Stage.VALIDATED: Status.VALIDATED,
    Stage.MISSING: Status.MISSING,
    Stage.FAILED: Status.FAILED,
    Stage.INVALID: Status.INVALID,
    Stage.SKIPPED: Status.SKIPPED,
}

NEXT_STEP = {
    Status.MISSING: "run `pracsuite-ingest reconcile` later; if still missing, check the file "
                    "in PracSuite and run again",
    Status.FAILED: "fix what the error says (client id, keys, network) and run again",
    Status.INVALID: "fix the row or the file, then run again",
    Status.PENDING: "run again with the same state file to resume",
}


def status_of(stage: Stage) -> Status:
    """The report status of an item in `stage` (anything unfinished is `pending`)."""
    return _STAGE_STATUS.get(stage, Status.PENDING)


def exit_code(summary: dict[str, int], *, interrupted: bool, dry_run: bool = False) -> int:
    """SPEC.md's exit code for a finished (or interrupted) run with this summary."""
    if interrupted:
        return 130
    if dry_run:
        return 1 if summary.get("invalid", 0) else 0
    bad = summary.get("missing", 0) + summary.get("failed", 0) + summary.get("invalid", 0)
    return 1 if bad or summary.get("pending", 0) else 0


def item_dict(item: ItemRecord, state: State) -> dict[str, Any]:
    status = status_of(item.stage)
    attachment_id, key = item.attachment_id, item.key
    if item.duplicate_of is not None and attachment_id is None:
        first = state.item(item.duplicate_of)
        if first is not None:
            attachment_id, key = first.attachment_id, first.key
    return {
        "client_id": item.client_id, "path": item.path, "file_name": item.file_name,
        "size": item.size, "sha256": item.sha256, "status": status.value,
        "attachment_id": attachment_id, "key": key,
        "error": None if status is Status.VALIDATED else item.error,
        "attempts": item.attempts, "extra": item.extra,
    }


def items_of(state: State, run_id: str) -> Iterator[dict[str, Any]]:
    for item in state.items(run_id):
        yield item_dict(item, state)


def summarise(statuses: Iterable[str]) -> dict[str, int]:
    counts = Counter(statuses)
    summary = {"total": sum(counts.values())}
    summary.update({s.value: counts.get(s.value, 0) for s in (
        Status.VALIDATED, Status.MISSING, Status.FAILED, Status.INVALID, Status.SKIPPED,
        Status.PENDING)})
    return summary


def _atomic_write(path: Path, text: str) -> None:
    """Write to a temp file beside `path`, fsync, then rename: never half a report."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def to_csv(items: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(ITEM_COLUMNS)
    for it in items:
        writer.writerow([json.dumps(it[c], ensure_ascii=False) if c == "extra"
                         else ("" if it[c] is None else it[c]) for c in ITEM_COLUMNS])
    return buf.getvalue()


def to_html(doc: dict[str, Any]) -> str:
    """A self-contained page for a person: totals, per client, every problem and its fix."""
    esc = html.escape
    s = doc["summary"]
    per_client: dict[str, Counter[str]] = {}
    for it in doc["items"]:
        per_client.setdefault(it["client_id"] or "(none)", Counter())[it["status"]] += 1
    statuses = [st.value for st in Status]
    head = "".join(f"<th>{esc(x)}</th>" for x in ["client", *statuses])
    rows = "".join(
        "<tr><td>" + esc(c) + "</td>" + "".join(f"<td>{n[x]}</td>" for x in statuses) + "</tr>"
        for c, n in sorted(per_client.items()))
    problems = "".join(
        f"<tr class='{esc(it['status'])}'><td>{esc(it['client_id'])}</td>"
        f"<td>{esc(it['file_name'])}</td><td>{esc(it['status'])}</td>"
        f"<td>{esc(it['error'] or '')}</td>"
        f"<td>{esc(NEXT_STEP.get(Status(it['status']), ''))}</td></tr>"
        for it in doc["items"] if it["status"] not in ("validated", "skipped"))
    totals = "".join(f"<div class='t'><b>{s[k]}</b><span>{esc(k)}</span></div>" for k in s)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>pracsuite-ingest report {esc(doc['run_id'])}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
.t{{display:inline-block;margin:0 1.5em 1em 0}}.t b{{display:block;font-size:1.8em}}
.failed,.invalid{{background:#fde8e8}}.missing,.pending{{background:#fff6da}}</style></head><body>
<h1>Run {esc(doc['run_id'])}</h1>
<p>Started {esc(str(doc['started_at']))}, finished {esc(str(doc['finished_at']))}.</p>
<section>{totals}</section>
<h2>Per client</h2><table><tr>{head}</tr>{rows}</table>
<h2>Needs attention</h2>
{'<table><tr><th>client</th><th>file</th><th>status</th><th>why</th><th>what to do</th></tr>'
 + problems + '</table>' if problems else '<p>Nothing: every item is validated or skipped.</p>'}
</body></html>
"""


def build(state: State, run_id: str) -> dict[str, Any]:
    info = state.run_info(run_id) or {}
    items = list(items_of(state, run_id))
    return {
        "run_id": run_id,
        "started_at": info.get("started_at"),
        "finished_at": info.get("finished_at"),
        "summary": summarise(it["status"] for it in items),
        "items": items,
    }


def write(doc: dict[str, Any], report_dir: Path) -> Path:
    """Write `<run_id>.{json,csv,html}` and `latest.*`, atomically, mode 0600."""
    report_dir.mkdir(parents=True, exist_ok=True)
    texts = {
        "json": json.dumps(doc, ensure_ascii=False, indent=1),
        "csv": to_csv(doc["items"]),
        "html": to_html(doc),
    }
    for ext, text in texts.items():
        _atomic_write(report_dir / f"{doc['run_id']}.{ext}", text)
        _atomic_write(report_dir / f"latest.{ext}", text)
    return report_dir / f"{doc['run_id']}.json"


def summary_text(doc: dict[str, Any], path: Path | None) -> str:
    s = doc["summary"]
    parts = [f"{k} {s[k]}" for k in ("validated", "skipped", "missing", "failed", "invalid",
                                     "pending") if s[k]]
    line = f"run {doc['run_id']}: {s['total']} items" + (": " + ", ".join(parts) if parts else "")
    return line + (f"\nreport: {path}" if path else "")
