"""`report merge`: shard and practice reports combined into one (docs/contract.md, "Sharding").

Each folder's `latest.json` is read; one report with the same schema is written to
`--out` through `report.write` (atomic, owner-only): every part's items, the summary of
them all, and two extra top-level keys, `practices` (totals per practice) and `parts`
(totals per folder). A folder named `shard-I-of-N` belongs to the practice named by
the folder above it; any other folder is a practice of its own, named by itself.

The exit code is the one a run with the merged report would have (`report.exit_code`,
not interrupted): 0 when every item is validated or skipped, else 1. A part whose run
was interrupted shows as `pending` items, so the whole exits 1, not 130: the merge
itself ran to its end, and `parts` says which shard to run again.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pracsuite_ingest import report as rpt
from pracsuite_ingest.errors import ConfigError
from pracsuite_ingest.models import Status

SHARD_DIR = re.compile(r"^shard-(\d+)-of-(\d+)$")
EXIT_CONFIG, EXIT_FATAL = 2, 3
STATUSES = frozenset(s.value for s in Status)


def practice_and_shard(folder: Path) -> tuple[str, tuple[int, int] | None]:
    """(practice, (I, N) or None) from a report folder's path."""
    folder = folder.resolve()
    m = SHARD_DIR.match(folder.name)
    if m:
        return folder.parent.name, (int(m.group(1)), int(m.group(2)))
    return folder.name, None


def read_part(folder: Path) -> dict[str, Any]:
    """A folder's latest.json, checked to be a pracsuite-ingest report; ConfigError if not."""
    path = folder / "latest.json"
    try:
        doc: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{folder}: no latest.json (has this shard run yet?)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a pracsuite-ingest report (not an object)")
    items = doc.get("items")
    if not isinstance(items, list) or not isinstance(doc.get("run_id"), str):
        raise ConfigError(f"{path}: not a pracsuite-ingest report (no run_id or items)")
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not set(REQUIRED_COLUMNS) <= item.keys():
            raise ConfigError(f"{path}: item {n} lacks report columns")
        if item["status"] not in STATUSES:
            raise ConfigError(f"{path}: item {n} has an unknown status {item['status']!r}")
    return doc


# `verified` and `replaces` came later: a report without them is still merged (its items
# count as unverified, replacing nothing).
REQUIRED_COLUMNS = tuple(c for c in rpt.ITEM_COLUMNS if c not in ("verified", "replaces"))


def check_parts(folders: Sequence[Path], out: Path) -> None:
    """Each folder once, none of them `out`; a sharded practice with all its shards,
    of one shard count."""
    if out.resolve() in {f.resolve() for f in folders}:
        raise ConfigError(f"--out {out} is one of the report folders; its latest.json "
                          "would be overwritten")
    seen: dict[Path, Path] = {}
    shards: dict[str, set[tuple[int, int] | None]] = {}
    for folder in folders:
        real = folder.resolve()
        if real in seen:
            raise ConfigError(f"{folder}: given twice (also as {seen[real]})")
        seen[real] = folder
        practice, shard = practice_and_shard(folder)
        shards.setdefault(practice, set()).add(shard)
    for practice, found in sorted(shards.items()):
        counts = {s[1] if s else None for s in found}
        if len(counts) > 1:
            raise ConfigError(f"practice {practice}: reports of different shard layouts "
                              f"({', '.join(sorted(_layout(c) for c in counts))}); "
                              "their rows would be counted twice")
        count = counts.pop()
        if count is not None:
            missing = sorted(set(range(1, count + 1)) - {s[0] for s in found if s})
            if missing:
                raise ConfigError(f"practice {practice}: no report folder for shard(s) "
                                  f"{', '.join(f'{i}/{count}' for i in missing)}")


def _layout(count: int | None) -> str:
    return "unsharded" if count is None else f"{count} shards"


def merge(parts: Iterable[tuple[Path, dict[str, Any]]], now: datetime) -> dict[str, Any]:
    """One report of every part's items, with per-practice and per-part totals."""
    items: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    by_practice: dict[str, list[dict[str, Any]]] = {}
    for folder, doc in parts:
        practice, shard = practice_and_shard(folder)
        summary = rpt.summarise_items(doc["items"])
        items.extend(doc["items"])
        entry = {"dir": str(folder), "practice": practice,
                 "shard": f"{shard[0]}/{shard[1]}" if shard else None,
                 "run_id": doc["run_id"], "started_at": doc.get("started_at"),
                 "finished_at": doc.get("finished_at"), "summary": summary}
        entries.append(entry)
        by_practice.setdefault(practice, []).append(entry)
    practices = [{"practice": name, "parts": len(group),
                  "summary": _sum(e["summary"] for e in group)}
                 for name, group in sorted(by_practice.items())]
    starts = [e["started_at"] for e in entries if e["started_at"]]
    ends = [e["finished_at"] for e in entries if e["finished_at"]]
    return {
        "run_id": f"merged-{now:%Y-%m-%dT%H-%M-%SZ}-{secrets.token_hex(2)}",
        "started_at": min(starts, default=None),
        "finished_at": max(ends, default=None),
        "summary": rpt.summarise_items(items),
        "items": items,
        "practices": practices,
        "parts": entries,
    }


def _sum(summaries: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for summary in summaries:
        for key, value in summary.items():
            total[key] = total.get(key, 0) + value
    return total


def merge_command(folders: Sequence[Path], out: Path) -> int:
    """`report merge FOLDER... --out OUT`: write the merged report, print its summary."""
    try:
        check_parts(folders, out)
        doc = merge(((f, read_part(f)) for f in folders), datetime.now(UTC))
    except ConfigError as exc:
        print(f"pracsuite-ingest report merge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        path = rpt.write(doc, out)
    except OSError as exc:
        print(f"pracsuite-ingest report merge: cannot write to {out}: {exc.strerror}",
              file=sys.stderr)
        return EXIT_FATAL
    print(rpt.summary_text(doc, path))
    for practice in doc["practices"]:
        s = practice["summary"]
        print(f"  {practice['practice']}: {s['total']} items in {practice['parts']} part(s), "
              f"{s['validated']} validated, {s['skipped']} skipped, "
              f"{s['total'] - s['validated'] - s['skipped']} need attention")
    return rpt.exit_code(doc["summary"], interrupted=False)
