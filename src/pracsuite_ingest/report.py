"""JSON / CSV / HTML report and the stdout summary, derived from the state file only."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import html
import io
import json
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from pracsuite_ingest.localfs import private_dir
from pracsuite_ingest.logs import scrub
from pracsuite_ingest.models import Stage, Status
from pracsuite_ingest.plural import counted
from pracsuite_ingest.report_charts import Timeline, charts_html
from pracsuite_ingest.report_html import render as render_html
from pracsuite_ingest.settings import Settings
from pracsuite_ingest.state import ItemRecord, State
from pracsuite_ingest.visible import visible

ITEM_COLUMNS = ("client_id", "path", "file_name", "size", "sha256", "status", "attachment_id",
                "key", "error", "attempts", "verified", "replaces", "extra")

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
    """docs/contract.md's exit code for a finished (or interrupted) run with this summary."""
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
        # a validated item's error is only ever the note that another record holds the
        # very same bytes (reconcile/twins.py): claimed, and said so
        "error": None if item.error is None else scrub(item.error),
        "attempts": item.attempts,
        "verified": True if status is Status.VALIDATED and item.verified else None,
        "replaces": item.replaces,  # the earlier attachment of this row, other content
        "extra": item.extra,
    }


def items_of(state: State, run_id: str) -> Iterator[dict[str, Any]]:
    for item in state.items(run_id):
        yield item_dict(item, state)


def summarise(statuses: Iterable[str], verified: int = 0) -> dict[str, int]:
    """Items per status; `verified` counts the validated items whose record's bytes
    were downloaded and found equal to the file's."""
    counts = Counter(statuses)
    summary = {"total": sum(counts.values())}
    summary.update({s.value: counts.get(s.value, 0) for s in (
        Status.VALIDATED, Status.MISSING, Status.FAILED, Status.INVALID, Status.SKIPPED,
        Status.PENDING)})
    summary["verified"] = verified
    return summary


def summarise_items(items: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """`summarise` of report items, in one pass."""
    verified = 0

    def statuses() -> Iterator[str]:
        nonlocal verified
        for it in items:
            verified += 1 if it.get("verified") else 0
            yield it["status"]

    counts = Counter(statuses())
    return summarise(counts.elements(), verified)


def _atomic_write(path: Path, content: str | Callable[[TextIO], None]) -> None:
    """Write to a temp file beside `path`, fsync, then rename: never half a report.

    `content` is the text, or a function that writes it (streamed, for long reports).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            if isinstance(content, str):
                fh.write(content)
            else:
                content(fh)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def _atomic_copy(source: Path, path: Path) -> None:
    def copy(fh: TextIO) -> None:
        with source.open(encoding="utf-8", newline="") as src:
            shutil.copyfileobj(src, fh)

    _atomic_write(path, copy)


class ReportStopped(Exception):
    """The report was stopped before its end (`StateItems`' `stop` was set)."""


class StateItems:
    """A run's report items, read from the state file afresh on each pass.

    Never a list: a report of 100,000 rows costs the memory of one row at a time.
    `stop` (set from another thread): the next item raises `ReportStopped`.
    """

    def __init__(self, state: State, run_id: str, stop: threading.Event | None = None) -> None:
        self._state, self._run_id, self._stop = state, run_id, stop

    def __iter__(self) -> Iterator[dict[str, Any]]:
        items = items_of(self._state, self._run_id)
        if self._stop is None:
            return items
        return self._until_stopped(items, self._stop)

    @staticmethod
    def _until_stopped(items: Iterator[dict[str, Any]], stop: threading.Event
                       ) -> Iterator[dict[str, Any]]:
        for item in items:
            if stop.is_set():
                raise ReportStopped
            yield item

    def validation_times(self) -> Iterator[tuple[float | None, float]]:
        """(uploaded_at, validated_at) of each validated item, for the HTML's charts."""
        return self._state.validation_times(self._run_id)


def write_json(fh: TextIO, doc: Mapping[str, Any]) -> None:
    """The report as JSON, items streamed one at a time."""
    fh.write("{\n")
    for key, value in doc.items():
        if key != "items":
            fh.write(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},\n")
    fh.write(' "items": [')
    for n, item in enumerate(doc["items"]):
        fh.write(",\n  " if n else "\n  ")
        fh.write(json.dumps(item, ensure_ascii=False))
    fh.write("\n ]\n}\n")


def write_csv(fh: TextIO, items: Iterable[Mapping[str, Any]]) -> None:
    writer = csv.writer(fh)
    writer.writerow(ITEM_COLUMNS)
    for it in items:
        writer.writerow([csv_cell(json.dumps(it[c], ensure_ascii=False) if c == "extra"
                                  else ("" if it.get(c) is None else it[c])) for c in ITEM_COLUMNS])


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell that a spreadsheet shows as text: one starting like a formula (`=cmd|...`,
    `+`, `-`, `@`, tab, CR) gets a leading `'`. Numbers are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(items: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    write_csv(buf, items)
    return buf.getvalue()


def to_html(doc: dict[str, Any]) -> str:
    """A self-contained page for a person (report_html.py), with a merge's extra tables."""
    return render_html(doc, extra_sections=_parts_html(doc), charts=_charts_html(doc))


def _charts_html(doc: dict[str, Any]) -> str:
    """The charts of a run read from the state file; "" for a merged report (its items
    carry no times: each part's own report has its charts)."""
    times = getattr(doc["items"], "validation_times", None)
    try:
        started = datetime.fromisoformat(str(doc.get("started_at")))
    except ValueError:
        return ""
    if times is None:
        return ""
    interval = doc.get("poll_interval_s")
    return charts_html(Timeline.of(started.timestamp(), times()),
                       float(interval) if isinstance(interval, int | float) else None)


def _parts_html(doc: dict[str, Any]) -> str:
    """A merged report's per-practice and per-part tables (`report merge`); else ""."""
    esc = html.escape
    keys = [s.value for s in Status]
    head = "".join(f"<th>{esc(k)}</th>" for k in ["total", *keys])
    out = ""
    for title, rows, label in (
            ("Per practice", doc.get("practices", []), lambda r: r["practice"]),
            ("Per part", doc.get("parts", []),
             lambda r: f"{r['practice']} {r['shard'] or ''} ({r['run_id']})")):
        if rows:
            body = "".join(
                f"<tr><td>{esc(label(r))}</td>"
                + "".join(f"<td>{r['summary'].get(k, 0)}</td>" for k in ["total", *keys])
                + "</tr>" for r in rows)
            out += f"<h2>{title}</h2><table><tr><th></th>{head}</tr>{body}</table>\n"
    return out


def practice_id(base_url: str, practice_api_key: str) -> str:
    """Which practice a report is of, naming no secret: 16 hex digits of a sha256 over
    PracSuite's URL and the practice's key (64 bits of a hash of a random key: it tells
    practices apart, and gives nothing to guess the key from).

    `report merge` refuses to count reports of two practices as one (merge.py)."""
    seed = f"pracsuite-ingest practice\0{base_url.rstrip('/')}\0{practice_api_key}"
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:16]


def practice_of(settings: Settings) -> str | None:
    """`practice_id` of the settings' practice; None without a practice key (a dry run)."""
    key = settings.api.practice_api_key.get_secret_value()
    return practice_id(settings.api.base_url, key) if key else None


def build(state: State, run_id: str, practice: str | None = None,
          stop: threading.Event | None = None) -> dict[str, Any]:
    """The report of `run_id`; its `items` are read from the state on each pass.
    `practice` is `practice_id(...)` of the run's settings, where known; `stop`: see
    `StateItems`."""
    info = state.run_info(run_id) or {}
    items = StateItems(state, run_id, stop)
    return {
        "run_id": run_id,
        "started_at": info.get("started_at"),
        "finished_at": info.get("finished_at"),
        **({"practice_id": practice} if practice else {}),
        "summary": summarise_items(items),
        "items": items,
    }


def _write_text(fh: TextIO, text: str) -> None:
    fh.write(text)


LATEST = "latest"
DRY_RUN = "dry-run"  # a dry run's copies: it never replaces `latest.*` (SPEC, Report)


def write(doc: dict[str, Any], report_dir: Path, *, alias: str = LATEST) -> Path:
    """Write `<run_id>.{json,csv,html}` and `<alias>.*`, atomically, mode 0600.

    JSON and CSV are streamed item by item; `<alias>.*` (`latest`, or `dry-run` for a
    dry run) are copies of the run's files.
    """
    private_dir(report_dir)  # 0700 for the folders created here
    writers: dict[str, Callable[[TextIO], None]] = {
        "json": lambda fh: write_json(fh, doc),
        "csv": lambda fh: write_csv(fh, doc["items"]),
        "html": lambda fh: _write_text(fh, to_html(doc)),
    }
    for ext, writer in writers.items():
        path = report_dir / f"{doc['run_id']}.{ext}"
        _atomic_write(path, writer)
        _atomic_copy(path, report_dir / f"{alias}.{ext}")
    return report_dir / f"{doc['run_id']}.json"


def summary_text(doc: dict[str, Any], path: Path | None) -> str:
    s = doc["summary"]
    parts = [f"{k} {s[k]}" for k in ("validated", "skipped", "missing", "failed", "invalid",
                                     "pending") if s[k]]
    if s.get("verified"):
        parts.insert(1, f"verified by their bytes {s['verified']}")
    line = f"run {doc['run_id']}: {counted(s['total'], 'item')}" + (
        ": " + ", ".join(parts) if parts else "")
    return visible(line + (f"\nreport: {path}" if path else ""), keep_lines=True)
