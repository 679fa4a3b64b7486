"""Matching PracSuite's records to our uploads (pure), and the polling loop (I/O).

A record carries no `file_name`. Two kinds of evidence link a new record to an upload:
1. **proof**: the presigned key's uuid, or the key itself, appearing in any string of
   the record: unique to our presign, nobody else's record can carry it;
2. **name and size**: a string of the record equal to the file name (e.g.
   `description`), or the file name `presign_url` returns, sizes agreeing. Names are
   compared in Unicode NFC. This is never proof on its own: someone else (the front
   desk, a re-scan) may upload the same name and size for the same patient during the
   run, and a lookalike that appears before our record would be alone at that poll.
`decide` turns the evidence into claims under `reconcile.verify`: `all` claims only
records whose bytes (downloaded, `verification.py`) equal the file's; `ambiguous`
(the default) lets the bytes decide wherever name and size are all there is; `off`
downloads nothing, and claims a name-and-size match only where exactly one new record
and one upload share that name and size at the poll (two or more: not claimed).
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
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from pracsuite_ingest.api import PageRef, RecordRef, record_links

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
    sha256: str | None = None
    """The file's sha256: what a record's bytes must hash to (`decide`)."""

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


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _names_equal(text: str, file_name: str) -> bool:
    text, file_name = nfc(text.strip()), nfc(file_name)
    return text == file_name or text.endswith("/" + file_name)


def _proof(upload: Upload, rec: RecordView) -> bool:
    """The record carries something unique to this upload's presign (key or its uuid)."""
    uuid = upload.uuid
    for s in rec.strings:
        if uuid and uuid in s.lower():
            return True
        if upload.key and upload.key in s:
            return True
    return False


def _named(upload: Upload, rec: RecordView, names: Mapping[str, str]) -> bool:
    """Name (a string of the record, or its presign_url name) and size agree."""
    if not _sizes_agree(upload, rec):
        return False
    known = names.get(rec.record_id)
    if known is not None and nfc(known) == nfc(upload.file_name):
        return True
    return any(_names_equal(s, upload.file_name) for s in rec.strings)


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


@dataclass(frozen=True, slots=True)
class Evidence:
    """What links new records to uploads: `proven` (record carrying the upload's key or
    its uuid; each record for one upload) and `named` (records whose name and size
    agree, id order; a record may be named for several uploads)."""

    proven: dict[int, str]
    named: dict[int, list[str]]

    def linked(self, item_id: int) -> bool:
        return item_id in self.proven or bool(self.named.get(item_id))


def match(
    uploads: Iterable[Upload],
    records: Iterable[RecordView],
    excluded: Set[str],
    names: Mapping[str, str],
) -> Evidence:
    """The evidence candidate records give for each upload.

    `excluded` holds the record ids no upload may claim (already claimed by another
    upload); each upload's own snapshot is `Upload.before` (`candidate`). `names`: the
    file names read back through `presign_url` for new records. Pure and
    deterministic: uploads in item order, records in id order; a record proven for one
    upload is named for none.
    """
    pending = sorted(uploads, key=lambda u: u.item_id)
    hidden = in_every_snapshot(pending)  # not worth indexing: no upload may claim them
    candidates = sorted((r for r in records
                         if r.record_id not in excluded and r.record_id not in hidden),
                        key=lambda r: _sort_key(r.record_id))
    taken: set[str] = set()
    proven: dict[int, str] = {}
    index = _Candidates(candidates)
    for up in pending:
        for i in index.proof(up):
            if candidate(up, candidates[i].record_id, taken):
                proven[up.item_id] = candidates[i].record_id
                taken.add(candidates[i].record_id)
                break
    by_name: dict[str, list[RecordView]] = {}
    for rec in candidates:
        if rec.record_id in names and rec.record_id not in taken:
            by_name.setdefault(nfc(names[rec.record_id]), []).append(rec)
    named: dict[int, list[str]] = {}
    for up in pending:
        if up.item_id in proven:
            continue
        found = {i for i in index.named(up) if candidate(up, candidates[i].record_id, taken)}
        ids = [candidates[i].record_id for i in sorted(found)]
        ids += [rec.record_id for rec in by_name.get(nfc(up.file_name), ())
                if _sizes_agree(up, rec) and candidate(up, rec.record_id, taken)
                and rec.record_id not in ids]
        if ids:
            named[up.item_id] = sorted(ids, key=_sort_key)
    return Evidence(proven, named)


@dataclass(frozen=True, slots=True)
class Digest:
    """What a record's bytes were: their count and sha256."""

    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Decision:
    """`claims`: item -> (record, whether its bytes were compared); `download`: records
    whose bytes must be read before anything more can be decided; `ambiguous`
    (verify off): uploads left unclaimed, with the records name and size cannot tell
    apart; `differ`: records whose bytes are not the upload's (never claimed for it)."""

    claims: dict[int, tuple[str, bool]]
    download: list[str]
    ambiguous: dict[int, list[str]]
    differ: dict[int, list[str]]


def _ours(up: Upload, digest: Digest) -> bool:
    return up.sha256 is not None and digest.sha256 == up.sha256 and (
        up.size is None or digest.size == up.size)


def decide(uploads: Iterable[Upload], evidence: Evidence, verify: str,
           digests: Mapping[str, Digest]) -> Decision:
    """Claims under `verify` ("off" | "ambiguous" | "all"), given the digests of the
    records downloaded so far. Pure; uploads in item order, each record claimed once.

    A record whose bytes differ from the upload's is never claimed for it. With
    "off", a name-and-size match is claimed only where one record and one upload share
    it (counting every upload that names that record).
    """
    pending = sorted(uploads, key=lambda u: u.item_id)
    claims: dict[int, tuple[str, bool]] = {}
    download: list[str] = []
    ambiguous: dict[int, list[str]] = {}
    differ: dict[int, list[str]] = {}
    taken: set[str] = set()

    def by_bytes(up: Upload, records: list[str]) -> None:
        for rid in records:
            digest = digests.get(rid)
            if digest is None:
                if rid not in download:
                    download.append(rid)
            elif _ours(up, digest):
                claims[up.item_id] = (rid, True)
                taken.add(rid)
                return
            else:
                differ.setdefault(up.item_id, []).append(rid)

    named_by: dict[str, int] = {}
    for up in pending:
        for rid in evidence.named.get(up.item_id, ()):
            named_by[rid] = named_by.get(rid, 0) + 1
    for up in pending:
        proven = evidence.proven.get(up.item_id)
        if proven is not None:
            if verify == "all":
                by_bytes(up, [proven])
            else:
                claims[up.item_id] = (proven, False)
                taken.add(proven)
            continue
        named = [rid for rid in evidence.named.get(up.item_id, ()) if rid not in taken]
        if not named:
            continue
        if verify != "off":
            by_bytes(up, named)
        elif len(named) == 1 and named_by[named[0]] == 1:
            claims[up.item_id] = (named[0], False)
            taken.add(named[0])
        else:
            ambiguous[up.item_id] = named
    return Decision(claims, download, ambiguous, differ)


_SEP = "\x00"  # between a record's strings: a uuid or key never spans two of them


class _Candidates:
    """Candidate records (id order), searched per upload with `str.find`, not pairwise.

    `proof(up)` and `named(up)` answer exactly what `_proof(up, record)` and the string
    half of `_named` answer for each record: trying every (upload, record) pair made a
    poll of 10 clients x 200 uploads cost seconds of CPU.
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
                text = nfc(text.strip())
                for name in (text, text.rpartition("/")[2]) if "/" in text else (text,):
                    positions = self._by_text.setdefault(name, [])
                    if not positions or positions[-1] != i:
                        positions.append(i)
        self._exact = "".join(exact)
        self._lowered = "".join(lowered)

    def named(self, up: Upload) -> list[int]:
        """Positions (ascending) of the records one of whose strings names the upload,
        sizes agreeing."""
        if "/" in up.file_name:  # outside what the index models
            return [i for i, rec in enumerate(self.records) if _named(up, rec, {})]
        return [i for i in self._by_text.get(nfc(up.file_name), ())
                if _sizes_agree(up, self.records[i])]

    def proof(self, up: Upload) -> list[int]:
        """Positions (ascending) of the records that `_proof(up, record)` holds for."""
        if _SEP in up.key:  # outside what the index models
            return [i for i, rec in enumerate(self.records) if _proof(up, rec)]
        hits: set[int] = set()
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


def needs_name(records: Iterable[RecordView], excluded: Set[str], skip: Iterable[str],
               known: Mapping[str, str], uploads: Iterable[Upload] = ()) -> list[str]:
    """New records whose file name must be read back via `presign_url`: not excluded
    (claimed ones, and those in every waiting upload's snapshot: `in_every_snapshot`),
    not in `skip` (proven, or named by one of their own strings), not known yet, and
    (when `uploads` are given) of a size some upload could have."""
    done = set(skip)
    sizes = {u.size for u in uploads}
    any_size = not sizes or None in sizes
    return [r.record_id for r in records
            if r.record_id not in excluded and r.record_id not in done
            and r.record_id not in known
            and (any_size or r.file_size is None or r.file_size in sizes)]


class RecordSource(Protocol):
    """What the polling loop needs from PracSuite (the API client satisfies it)."""

    def first_page(self, client_id: str) -> PageRef: ...

    async def list_page(self, client_id: str, ref: PageRef) -> tuple[
        list[dict[str, Any]], PageRef | None]: ...

    async def record_presign(self, ref: RecordRef) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class PresignAnswer:
    """A record's `presign_url` answer: its file name and a short-lived presigned GET
    of its bytes on the storage, read at `read_at` (monotonic seconds)."""

    file_name: str
    url: str
    read_at: float


def presign_answer(data: Mapping[str, Any], now: float) -> PresignAnswer:
    url = data.get("url")
    return PresignAnswer(str(data.get("file_name") or ""),
                         url if isinstance(url, str) else "", now)


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
    answers: dict[str, PresignAnswer] | None = None,
    on_answer: Callable[[str, PresignAnswer], Awaitable[None]] | None = None,
    links: dict[str, str] | None = None,
) -> Evidence:
    """One poll for one client: list, match, read back the names of new records that
    could be an upload's (so that every lookalike is seen), match again.

    `excluded`: records already claimed; each upload carries its own snapshot. `links`
    (when given) receives the records' own `links.presign_url`."""
    records = await list_records(api, client_id, call)
    own = {r.record_id: r.presign_link for r in records if r.presign_link}
    if links is not None:
        links.update(own)
    first = match(uploads, records, excluded, names)
    unclaimable = in_every_snapshot(uploads).union(excluded)
    skip = set(first.proven.values())
    index = _Candidates([r for r in records if r.record_id not in unclaimable])
    for up in uploads:  # records already named by their own strings need no look-up
        skip.update(index.records[i].record_id for i in index.named(up))
    wanted = needs_name(records, unclaimable, skip, names, uploads)
    if not wanted:
        return first
    await read_names(api, client_id, wanted, names, call, answers, on_answer, own)
    return match(uploads, records, excluded, names)


NAME_LOOKUPS_IN_FLIGHT = 8  # the rate limit still applies; this only overlaps round trips


async def read_names(api: RecordSource, client_id: str, record_ids: list[str],
                     names: dict[str, str], call: Retrier,
                     answers: dict[str, PresignAnswer] | None = None,
                     on_answer: Callable[[str, PresignAnswer], Awaitable[None]] | None = None,
                     links: Mapping[str, str] | None = None) -> None:
    """`presign_url` file names of `record_ids` into `names` (and the whole answers,
    for verification, into `answers`), a few requests at a time. `on_answer` is awaited
    with each answer in the same slot (verification downloads a candidate's bytes
    there, while its URL is fresh, instead of after every name is read).

    One after the other, 2,000 new records took 2,000 round trips. The first lookup
    that fails for good is raised (as before); the others are cancelled. `links`: the
    records' own `links.presign_url`, followed where given. `client_id` is not part
    of the documented path.
    """
    del client_id
    links = links or {}
    slots = asyncio.Semaphore(NAME_LOOKUPS_IN_FLIGHT)

    async def one(rid: str) -> None:
        try:
            ref = RecordRef(rid, links.get(rid, ""))
            answer = presign_answer(await call(partial(api.record_presign, ref)),
                                    time.monotonic())
            names[rid] = answer.file_name
            if answers is not None:
                answers[rid] = answer
            if on_answer is not None:
                await on_answer(rid, answer)
        finally:
            slots.release()

    try:
        async with asyncio.TaskGroup() as tg:
            for rid in record_ids:
                await slots.acquire()  # the slot before the task: no pile of waiting tasks
                tg.create_task(one(rid))
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
