"""Matching PracSuite's records to our uploads (pure), and the polling loop (I/O).

A record carries no `file_name`. In order of strength we match on:
1. the presigned key's uuid, or the key itself, appearing in any string of the record;
   a string of the record equal to the file name (e.g. `description`), sizes agreeing;
2. for records that are new since the run began and still unmatched: the file name
   that `presign_url` returns, sizes agreeing.
Records that existed before the run (the snapshot) or that another upload already
claimed are never candidates. Each record is claimed by at most one upload.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True, slots=True)
class Upload:
    """What we know of one upload that awaits its record."""

    item_id: int
    client_id: str
    file_name: str
    size: int | None
    key: str

    @property
    def uuid(self) -> str | None:
        found = UUID_RE.findall(self.key)
        return found[-1].lower() if found else None


@dataclass(frozen=True, slots=True)
class RecordView:
    record_id: str
    strings: tuple[str, ...]
    file_size: int | None


def record_id(record: Mapping[str, Any]) -> str | None:
    for key in ("attachment_client_id", "patient_attachment_id", "id"):
        value = record.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def view(record: Mapping[str, Any]) -> RecordView | None:
    rid = record_id(record)
    if rid is None:
        return None
    size = record.get("file_size")
    try:
        file_size = int(size) if size not in (None, "") else None
    except (TypeError, ValueError):
        file_size = None
    return RecordView(rid, tuple(_strings(record)), file_size)


def _sizes_agree(upload: Upload, rec: RecordView) -> bool:
    return upload.size is None or rec.file_size is None or upload.size == rec.file_size


def _names_equal(text: str, file_name: str) -> bool:
    text = text.strip()
    return text == file_name or text.endswith("/" + file_name)


def _strong(upload: Upload, rec: RecordView) -> bool:
    uuid = upload.uuid
    for s in rec.strings:
        if uuid and uuid in s.lower():
            return True
        if upload.key and upload.key in s:
            return True
    return any(_names_equal(s, upload.file_name) for s in rec.strings) and _sizes_agree(upload, rec)


def _sort_key(rid: str) -> tuple[int, int | str]:
    return (0, int(rid)) if rid.isdigit() else (1, rid)


def match(
    uploads: Iterable[Upload],
    records: Iterable[RecordView],
    excluded: set[str],
    names: Mapping[str, str],
) -> dict[int, str]:
    """`{item_id: record_id}` for the uploads that a candidate record proves.

    `excluded` holds the snapshot and already-claimed record ids; `names` the file
    names read back through `presign_url` for new records. Pure and deterministic:
    uploads in item order, records in id order, each record claimed once.
    """
    candidates = sorted((r for r in records if r.record_id not in excluded),
                        key=lambda r: _sort_key(r.record_id))
    taken: set[str] = set()
    out: dict[int, str] = {}
    pending = sorted(uploads, key=lambda u: u.item_id)
    for rule in ("strong", "name"):
        for up in pending:
            if up.item_id in out:
                continue
            for rec in candidates:
                if rec.record_id in taken:
                    continue
                if rule == "strong":
                    ok = _strong(up, rec)
                else:
                    ok = names.get(rec.record_id) == up.file_name and _sizes_agree(up, rec)
                if ok:
                    out[up.item_id] = rec.record_id
                    taken.add(rec.record_id)
                    break
    return out


def needs_name(records: Iterable[RecordView], excluded: set[str], matched: Iterable[str],
               known: Mapping[str, str]) -> list[str]:
    """New, unmatched records whose file name must be read back via `presign_url`."""
    done = set(matched)
    return [r.record_id for r in records
            if r.record_id not in excluded and r.record_id not in done
            and r.record_id not in known]


def next_poll_interval(current: float, first: float, cap: float = 60.0) -> float:
    """The wait grows by half each poll, from `first` up to `cap`."""
    return min(cap, max(first, current * 1.5))


class RecordSource(Protocol):
    """What the polling loop needs from PracSuite (the API client satisfies it)."""

    def list_pages(self, client_id: str) -> Any: ...

    async def record_file_name(self, client_id: str, record_id: str) -> str: ...


async def list_records(api: RecordSource, client_id: str) -> list[RecordView]:
    out: list[RecordView] = []
    async for page in api.list_pages(client_id):
        out.extend(v for v in (view(r) for r in page) if v is not None)
    return out


async def match_client(
    api: RecordSource,
    client_id: str,
    uploads: list[Upload],
    excluded: set[str],
    names: dict[str, str],
) -> dict[int, str]:
    """One poll for one client: list, match, read back names of new records, match again."""
    records = await list_records(api, client_id)
    first = match(uploads, records, excluded, names)
    if len(first) == len(uploads):
        return first
    for rid in needs_name(records, excluded, first.values(), names):
        names[rid] = await api.record_file_name(client_id, rid)
    return match(uploads, records, excluded, names)


async def sleep_until_next_poll(interval: float, deadline: float) -> bool:
    """Sleep `interval` (not past `deadline`); False when the deadline has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    await asyncio.sleep(min(interval, left))
    return True
