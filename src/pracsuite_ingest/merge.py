"""`report merge`: shard and practice reports combined into one (docs/contract.md, "Sharding").

Each folder's `latest.json` is read; one report with the same schema is written to
`--out` through `report.write` (atomic, owner-only): every part's items, the summary of
them all, and two extra top-level keys, `practices` (totals per practice) and `parts`
(totals per folder). A folder named `shard-I-of-N` belongs to the practice named by
the folder above it; any other folder is a practice of its own, named by itself.

Memory does not grow with the rows (SPEC.md, "Guarantees"): no part is ever held
whole. Each `latest.json` is read as a stream (ijson, a C parser over a 64 KB buffer):
once to check every item and count its part's summary, then again for each file
written (JSON, CSV, HTML), one item at a time. The HTML page lists the first
`report_html.LISTED` rows of each status; the CSV beside it holds every row.

Two folders holding the same shard of the same practice (by folder names, e.g.
`a/clinic/shard-1-of-2` and `b/clinic/shard-1-of-2`) are an error naming both. When the
reports carry a practice identity (`report.practice_id`: a short hash of PracSuite's
URL and the practice key, no secret), folders with one name but reports of different
practices are an error too, naming them: they would be counted as one practice.

The exit code is the one a run with the merged report would have (`report.exit_code`,
not interrupted): 0 when every item is validated or skipped, else 1. A part whose run
was interrupted shows as `pending` items, so the whole exits 1, not 130: the merge
itself ran to its end, and `parts` says which shard to run again.
"""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import ijson

from pracsuite_ingest import report as rpt
from pracsuite_ingest.errors import ConfigError
from pracsuite_ingest.models import Status
from pracsuite_ingest.plural import counted

SHARD_DIR = re.compile(r"^shard-(\d+)-of-(\d+)$")
EXIT_CONFIG, EXIT_FATAL = 2, 3
STATUSES = frozenset(s.value for s in Status)
HEADER_KEYS = ("run_id", "started_at", "finished_at", "practice_id")
# `verified` and `replaces` came later: a report without them is still merged (its items
# count as unverified, replacing nothing).
REQUIRED_COLUMNS = tuple(c for c in rpt.ITEM_COLUMNS if c not in ("verified", "replaces"))


def practice_and_shard(folder: Path) -> tuple[str, tuple[int, int] | None]:
    """(practice, (I, N) or None) from a report folder's path."""
    folder = folder.resolve()
    m = SHARD_DIR.match(folder.name)
    if m:
        return folder.parent.name, (int(m.group(1)), int(m.group(2)))
    return folder.name, None


@dataclass(frozen=True, slots=True)
class Part:
    """One folder's report, checked, with its summary: everything but its items."""

    folder: Path
    practice: str
    shard: tuple[int, int] | None
    run_id: str
    started_at: str | None
    finished_at: str | None
    practice_id: str | None
    summary: dict[str, int]

    @property
    def path(self) -> Path:
        return self.folder / "latest.json"

    def items(self) -> Iterator[dict[str, Any]]:
        return _items(self.path)


def _items(path: Path) -> Iterator[Any]:
    """A report's items, parsed one at a time from its file."""
    with _opened(path) as fh:
        yield from _parsed(path, ijson.items(fh, "items.item", use_float=True))


def _opened(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise ConfigError(f"{path.parent}: no latest.json (has this shard run yet?)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None


def _parsed(path: Path, stream: Iterable[Any]) -> Iterator[Any]:
    """`stream`, a parse error turned into the ConfigError that names the file."""
    try:
        yield from stream
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None


def _header(path: Path) -> dict[str, Any]:
    """The top-level scalars of a report (run_id, ...) and whether `items` is a list.

    Read from the stream's start; a report as `report.write` writes it has them all
    before `items`, so the rest of the file is not parsed here."""
    head: dict[str, Any] = {}
    with _opened(path) as fh:
        events = _parsed(path, ijson.parse(fh, use_float=True))
        for prefix, event, value in events:
            if prefix == "" and event not in ("start_map", "map_key", "end_map"):
                raise ConfigError(f"{path}: not a pracsuite-ingest report (not an object)")
            if prefix in HEADER_KEYS and event in ("string", "null"):
                head[prefix] = value
            elif prefix == "items" and event == "start_array":
                head["items"] = True
                if "run_id" in head:
                    break
    return head


def read_part(folder: Path) -> Part:
    """A folder's latest.json, checked to be a pracsuite-ingest report item by item,
    with its summary; ConfigError if not."""
    path = folder / "latest.json"
    head = _header(path)
    if not head.get("items") or not isinstance(head.get("run_id"), str):
        raise ConfigError(f"{path}: not a pracsuite-ingest report (no run_id or items)")
    practice, shard = practice_and_shard(folder)
    return Part(folder, practice, shard, head["run_id"], head.get("started_at"),
                head.get("finished_at"), head.get("practice_id"),
                rpt.summarise_items(_checked(path, _items(path))))


def _checked(path: Path, items: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not set(REQUIRED_COLUMNS) <= item.keys():
            raise ConfigError(f"{path}: item {n} lacks report columns")
        if item["status"] not in STATUSES:
            raise ConfigError(f"{path}: item {n} has an unknown status {item['status']!r}")
        yield item


def check_parts(folders: Sequence[Path], out: Path) -> None:
    """Each folder once, none of them `out`; a sharded practice with all its shards,
    of one shard count, and each shard once."""
    if out.resolve() in {f.resolve() for f in folders}:
        raise ConfigError(f"--out {out} is one of the report folders; its latest.json "
                          "would be overwritten")
    seen: dict[Path, Path] = {}
    holders: dict[tuple[str, tuple[int, int] | None], Path] = {}
    shards: dict[str, set[tuple[int, int] | None]] = {}
    for folder in folders:
        real = folder.resolve()
        if real in seen:
            raise ConfigError(f"{folder}: given twice (also as {seen[real]})")
        seen[real] = folder
        practice, shard = practice_and_shard(folder)
        other = holders.setdefault((practice, shard), folder)
        if other is not folder:
            what = f"shard {shard[0]}/{shard[1]}" if shard else "the report"
            raise ConfigError(f"{other} and {folder} both hold {what} of practice {practice}: "
                              "its rows would be counted twice (give each practice's folders "
                              "a name of their own)")
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


def check_identities(parts: Sequence[Part]) -> None:
    """The folders of one practice name hold reports of one practice, where the reports
    say which (a report without `practice_id`, from an earlier version, matches any)."""
    first: dict[str, Part] = {}
    for part in parts:
        if part.practice_id is None:
            continue
        other = first.setdefault(part.practice, part)
        if other.practice_id != part.practice_id:
            raise ConfigError(
                f"{other.folder} and {part.folder} are reports of different practices "
                f"(practice ids {other.practice_id} and {part.practice_id}) under one "
                f"practice name, {part.practice}: they would be merged as one practice. "
                "Give each practice's report folders a name of their own")


def _layout(count: int | None) -> str:
    return "unsharded" if count is None else f"{count} shards"


class MergedItems:
    """Every part's items in turn, read from the files afresh on each pass."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self._parts = parts

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for part in self._parts:
            yield from part.items()


def merge(parts: Sequence[Part], now: datetime) -> dict[str, Any]:
    """One report of every part's items, with per-practice and per-part totals."""
    entries: list[dict[str, Any]] = []
    by_practice: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        entry = {"dir": str(part.folder), "practice": part.practice,
                 "shard": f"{part.shard[0]}/{part.shard[1]}" if part.shard else None,
                 "run_id": part.run_id, "started_at": part.started_at,
                 "finished_at": part.finished_at, "summary": part.summary}
        if part.practice_id is not None:
            entry["practice_id"] = part.practice_id
        entries.append(entry)
        by_practice.setdefault(part.practice, []).append(entry)
    practices = [{"practice": name, "parts": len(group),
                  "summary": _sum(e["summary"] for e in group)}
                 for name, group in sorted(by_practice.items())]
    starts = [e["started_at"] for e in entries if e["started_at"]]
    ends = [e["finished_at"] for e in entries if e["finished_at"]]
    return {
        "run_id": f"merged-{now:%Y-%m-%dT%H-%M-%SZ}-{secrets.token_hex(2)}",
        "started_at": min(starts, default=None),
        "finished_at": max(ends, default=None),
        "summary": _sum(p.summary for p in parts) if parts else rpt.summarise([]),
        "items": MergedItems(parts),
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
        parts = [read_part(f) for f in folders]
        check_identities(parts)
        doc = merge(parts, datetime.now(UTC))
        path = rpt.write(doc, out)
    except ConfigError as exc:
        print(f"pracsuite-ingest report merge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"pracsuite-ingest report merge: cannot write to {out}: {exc.strerror}",
              file=sys.stderr)
        return EXIT_FATAL
    print(rpt.summary_text(doc, path))
    for practice in doc["practices"]:
        s = practice["summary"]
        print(f"  {practice['practice']}: {counted(s['total'], 'item')} in "
              f"{counted(practice['parts'], 'part')}, "
              f"{s['validated']} validated, {s['skipped']} skipped, "
              f"{s['total'] - s['validated'] - s['skipped']} need attention")
    return rpt.exit_code(doc["summary"], interrupted=False)
