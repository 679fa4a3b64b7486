"""Matching PracSuite's records to our uploads (pure), and the polling loop (I/O).

A record carries no `file_name`. In order of strength we match on:
1. the presigned key's uuid, or the key itself, appearing in any string of the record;
   a string of the record equal to the file name (e.g. `description`), sizes agreeing;
2. for records that are new since the run began and still unmatched: the file name
   that `presign_url` returns, sizes agreeing.
A record is a candidate for an upload unless it was in the snapshot taken before *that*
upload (`Upload.before`: for an upload carried to later runs, still the snapshot of the
run that sent it) or another upload already claimed it (`candidate`, the one place
this rule is written). Each record is claimed by at most one upload.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from pracsuite_ingest.api import PageRef, record_links

T = TypeVar("T")

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True, slots=True)
class Upload:
    """What we know of one upload that awaits its record."""

    item_id: int
    client_id: str
    file_name: str
    size: int | None
    key: str
    before: frozenset[str] = frozenset()
    """Record ids the client had before this upload: the snapshot its run took before
    sending it. A later run's snapshot says nothing about this upload's record."""

    @property
    def uuid(self) -> str | None:
        found = UUID_RE.findall(self.key)
        return found[-1].lower() if found else None


@dataclass(frozen=True, slots=True)
class RecordView:
    record_id: str
    strings: tuple[str, ...]
    file_size: int | None
    presign_link: str = ""
    """The record's own `links.presign_url` ("" when it has none)."""


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
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON 1e999
        file_size = None
    link = record_links(record).get("presign_url", "")
    return RecordView(rid, tuple(_strings(record)), file_size, link)


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


def candidate(upload: Upload, record_id: str, claimed: Set[str]) -> bool:
    """The exclusion rule: `record_id` may prove `upload` unless it was in the snapshot
    taken before that very upload, or another upload claimed it."""
    return record_id not in claimed and record_id not in upload.before


def in_every_snapshot(uploads: Iterable[Upload]) -> frozenset[str]:
    """Record ids that are in the snapshot of every one of `uploads`: a candidate for
    none of them (the rest may be a candidate for some)."""
    distinct = list({id(u.before): u.before for u in uploads}.values())
    if not distinct:
        return frozenset()
    common = min(distinct, key=len)
    for before in distinct:
        if before is not common:
            common = common & before
    return common


def proven_by_own_key(uploads: Iterable[Upload], claims: Mapping[str, str | None]
                      ) -> dict[int, str]:
    """`{item_id: record_id}` for uploads whose own key already has a record: one that
    another item row of the same upload claimed (a carried upload is one row per run;
    `reconcile --run-id` of an older run finds the later row's record). A key is
    presigned once and yields at most one record, so that record is this upload's."""
    by_key = {key: rid for rid, key in claims.items() if key}
    return {u.item_id: by_key[u.key] for u in uploads if u.key and u.key in by_key}


def match(
    uploads: Iterable[Upload],
    records: Iterable[RecordView],
    excluded: Set[str],
    names: Mapping[str, str],
) -> dict[int, str]:
    """`{item_id: record_id}` for the uploads that a candidate record proves.

    `excluded` holds the record ids no upload may claim (already claimed by another
    upload); each upload's own snapshot is `Upload.before` (`candidate`). `names`: the
    file names read back through `presign_url` for new records. Pure and deterministic:
    uploads in item order, records in id order, each record claimed once; the strong
    rule for every upload first, then the name rule.
    """
    pending = sorted(uploads, key=lambda u: u.item_id)
    hidden = in_every_snapshot(pending)  # not worth indexing: no upload may claim them
    candidates = sorted((r for r in records
                         if r.record_id not in excluded and r.record_id not in hidden),
                        key=lambda r: _sort_key(r.record_id))
    taken: set[str] = set()
    out: dict[int, str] = {}
    index = _Candidates(candidates)
    for up in pending:
        for i in index.strong(up):
            if candidate(up, candidates[i].record_id, taken):
                out[up.item_id] = candidates[i].record_id
                taken.add(candidates[i].record_id)
                break
    by_name: dict[str, list[RecordView]] = {}
    for rec in candidates:
        if rec.record_id in names:
            by_name.setdefault(names[rec.record_id], []).append(rec)
    for up in pending:
        if up.item_id in out:
            continue
        for rec in by_name.get(up.file_name, ()):
            if candidate(up, rec.record_id, taken) and _sizes_agree(up, rec):
                out[up.item_id] = rec.record_id
                taken.add(rec.record_id)
                break
    return out


_SEP = "\x00"  # between a record's strings: a uuid or key never spans two of them


class _Candidates:
    """Candidate records (id order), searched per upload with `str.find`, not pairwise.

    `strong(up)` answers exactly what `_strong(up, record)` answers for each record:
    trying every (upload, record) pair made a poll of 10 clients x 200 uploads cost
    seconds of CPU.
    """

    def __init__(self, records: list[RecordView]) -> None:
        self.records = records
        lowered: list[str] = []
        exact: list[str] = []
        self._starts: list[int] = []
        self._starts_lowered: list[int] = []
        self._by_text: dict[str, list[int]] = {}  # stripped string, or its part after "/"
        at = at_lowered = 0
        for i, rec in enumerate(records):
            self._starts.append(at)
            self._starts_lowered.append(at_lowered)
            blob = _SEP.join(rec.strings) + _SEP
            blob_lowered = _SEP.join(s.lower() for s in rec.strings) + _SEP
            exact.append(blob)
            lowered.append(blob_lowered)
            at += len(blob)
            at_lowered += len(blob_lowered)
            for text in rec.strings:
                text = text.strip()
                for name in (text, text.rpartition("/")[2]) if "/" in text else (text,):
                    positions = self._by_text.setdefault(name, [])
                    if not positions or positions[-1] != i:
                        positions.append(i)
        self._exact = "".join(exact)
        self._lowered = "".join(lowered)

    def strong(self, up: Upload) -> list[int]:
        """Positions (ascending) of the records that `_strong(up, record)` holds for."""
        if _SEP in up.key or "/" in up.file_name:  # outside what the index models
            return [i for i, rec in enumerate(self.records) if _strong(up, rec)]
        hits = {i for i in self._by_text.get(up.file_name, ())
                if _sizes_agree(up, self.records[i])}
        uuid = up.uuid
        if uuid:
            hits.update(_occurrences(self._lowered, uuid, self._starts_lowered))
        if up.key:
            hits.update(_occurrences(self._exact, up.key, self._starts))
        return sorted(hits)


def _occurrences(text: str, needle: str, starts: list[int]) -> Iterator[int]:
    """The positions of the records whose part of `text` contains `needle`."""
    at = text.find(needle)
    while at >= 0:
        yield bisect.bisect_right(starts, at) - 1
        at = text.find(needle, at + 1)


def needs_name(records: Iterable[RecordView], excluded: Set[str], matched: Iterable[str],
               known: Mapping[str, str]) -> list[str]:
    """New, unmatched records whose file name must be read back via `presign_url`.

    `excluded`: the records no waiting upload may claim (claimed ones, and those in
    every waiting upload's snapshot: `in_every_snapshot`)."""
    done = set(matched)
    return [r.record_id for r in records
            if r.record_id not in excluded and r.record_id not in done
            and r.record_id not in known]


def next_poll_interval(current: float, first: float, cap: float = 60.0) -> float:
    """The wait grows by half each poll from `first` (`reconcile.poll_interval_s`), up
    to `cap` (or `first` if that is larger). The first poll happens at once."""
    return min(max(cap, first), current * 1.5)


class RecordSource(Protocol):
    """What the polling loop needs from PracSuite (the API client satisfies it)."""

    def first_page(self, client_id: str) -> PageRef: ...

    async def list_page(self, client_id: str, ref: PageRef) -> tuple[
        list[dict[str, Any]], PageRef | None]: ...

    async def record_file_name(self, client_id: str, record_id: str,
                               presign_link: str = "") -> str: ...


class Retrier(Protocol):
    """Runs one API call under the retry policy (`retry.retrying` with the settings)."""

    async def __call__(self, op: Callable[[], Awaitable[T]]) -> T: ...


async def list_records(api: RecordSource, client_id: str, call: Retrier) -> list[RecordView]:
    """Every record of the client, each page fetched (and retried) on its own."""
    out: list[RecordView] = []
    ref: PageRef | None = api.first_page(client_id)
    while ref is not None:
        records, ref = await call(partial(api.list_page, client_id, ref))
        out.extend(v for v in (view(r) for r in records) if v is not None)
    return out


async def match_client(
    api: RecordSource,
    client_id: str,
    uploads: list[Upload],
    excluded: Set[str],
    names: dict[str, str],
    call: Retrier,
) -> dict[int, str]:
    """One poll for one client: list, match, read back names of new records, match again.

    `excluded`: records already claimed; each upload carries its own snapshot."""
    records = await list_records(api, client_id, call)
    first = match(uploads, records, excluded, names)
    if len(first) == len(uploads):
        return first
    waiting = [u for u in uploads if u.item_id not in first]
    unclaimable = in_every_snapshot(waiting).union(excluded)
    links = {r.record_id: r.presign_link for r in records if r.presign_link}
    await read_names(api, client_id, needs_name(records, unclaimable, first.values(), names),
                     names, call, links)
    return match(uploads, records, excluded, names)


NAME_LOOKUPS_IN_FLIGHT = 8  # the rate limit still applies; this only overlaps round trips


async def read_names(api: RecordSource, client_id: str, record_ids: list[str],
                     names: dict[str, str], call: Retrier,
                     links: Mapping[str, str] | None = None) -> None:
    """`presign_url` file names of `record_ids` into `names`, a few requests at a time.

    One after the other, 2,000 new records took 2,000 round trips. The first lookup
    that fails for good is raised (as before); the others are cancelled. `links`: the
    records' own `links.presign_url`, followed where given.
    """
    links = links or {}
    slots = asyncio.Semaphore(NAME_LOOKUPS_IN_FLIGHT)

    async def one(rid: str) -> None:
        try:
            names[rid] = await call(partial(api.record_file_name, client_id, rid,
                                            links.get(rid, "")))
        finally:
            slots.release()

    try:
        async with asyncio.TaskGroup() as tg:
            for rid in record_ids:
                await slots.acquire()  # the slot before the task: no pile of waiting tasks
                tg.create_task(one(rid))
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None


async def sleep_until_next_poll(interval: float, deadline: float) -> bool:
    """Sleep `interval` (not past `deadline`); False when the deadline has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    await asyncio.sleep(min(interval, left))
    return True
