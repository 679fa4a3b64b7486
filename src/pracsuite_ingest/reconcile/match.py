"""Which new record is which upload's: the evidence, in pure code.

A record carries no `file_name`. Two kinds of evidence link a new record to an upload:
1. **proof**: the presigned key's uuid, or the key itself, appearing in any string of
   the record: unique to our presign, nobody else's record can carry it;
2. **name and size**: a string of the record equal to the file name (e.g.
   `description`), or the file name `presign_url` returns, sizes agreeing. Names are
   compared in Unicode NFC. This is never proof on its own: someone else (the front
   desk, a re-scan) may upload the same name and size for the same patient during the
   run, and a lookalike that appears before our record would be alone at that poll.
What is claimed on that evidence, under `reconcile.verify`, is `claims.py`'s.
A record is a candidate for an upload unless it was in the snapshot taken before *that*
upload (`Upload.before`: for an upload carried to later runs, still the snapshot of the
run that sent it) or another upload already claimed it (`candidate`, the one place
this rule is written). Each record is claimed by at most one upload.
"""

from __future__ import annotations

import bisect
import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass

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
    """The file's sha256: what a record's bytes must hash to (`claims.decide_claims`)."""
    md5: str | None = None
    """The file's MD5, where it was read (to compare with the storage's checksum)."""
    seq: int = 0
    """The row's number in the input (what a log line names)."""

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


def record_order(rid: str) -> tuple[int, int | str]:
    """Record ids in id order: numbers by value, then the others as text."""
    return (0, int(rid)) if rid.isdigit() else (1, rid)


def candidate(upload: Upload, record_id: str, claimed: Set[str]) -> bool:
    """The exclusion rule: `record_id` may prove `upload` unless it was in the snapshot
    taken before that very upload, or another upload claimed it."""
    return record_id not in claimed and record_id not in upload.before


def in_every_snapshot(uploads: Iterable[Upload]) -> frozenset[str]:
    """Record ids that are in the snapshot of every one of `uploads`: a candidate for
    none of them (the rest may be a candidate for some)."""
    return in_all({id(u.before): u.before for u in uploads}.values())


def in_all(snapshots: Iterable[frozenset[str]]) -> frozenset[str]:
    """The record ids in every one of these distinct snapshots (none if there are none)."""
    distinct = list(snapshots)
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
                        key=lambda r: record_order(r.record_id))
    taken: set[str] = set()
    proven: dict[int, str] = {}
    index = _Candidates(candidates)
    for up in pending:
        for i in index.proof(up):
            if candidate(up, candidates[i].record_id, taken):
                proven[up.item_id] = candidates[i].record_id
                taken.add(candidates[i].record_id)
                break
    # A name's one record as itself, a list only for a name several records share: a
    # poll of 100,000 new records held 100,000 one-record lists here.
    by_name: dict[str, RecordView | list[RecordView]] = {}
    for rec in candidates:
        if rec.record_id in names and rec.record_id not in taken:
            name = nfc(names[rec.record_id])
            have = by_name.setdefault(name, rec)
            if isinstance(have, list):
                have.append(rec)
            elif have is not rec:
                by_name[name] = [have, rec]
    named: dict[int, list[str]] = {}
    for up in pending:
        if up.item_id in proven:
            continue
        found = {i for i in index.named(up) if candidate(up, candidates[i].record_id, taken)}
        ids = [candidates[i].record_id for i in sorted(found)]
        same = by_name.get(nfc(up.file_name), [])
        ids += [rec.record_id for rec in (same if isinstance(same, list) else [same])
                if _sizes_agree(up, rec) and candidate(up, rec.record_id, taken)
                and rec.record_id not in ids]
        if ids:
            named[up.item_id] = sorted(ids, key=record_order)
    return Evidence(proven, named)


_SEP = "\x00"  # between a record's strings: a uuid or key never spans two of them


class _Candidates:
    """Candidate records (id order), indexed once so that each upload is looked up, not
    compared with every record.

    `proof(up)` and `named(up)` answer exactly what `_proof(up, record)` and the string
    half of `_named` answer for each record: trying every (upload, record) pair made a
    poll of 10 clients x 200 uploads cost seconds of CPU, and searching every record's
    text once per upload still made one patient's 10,000 uploads cost seconds per poll.
    """

    def __init__(self, records: list[RecordView]) -> None:
        self.records = records
        self._by_text: dict[str, list[int]] = {}  # stripped string, or its part after "/"
        self._by_uuid: dict[str, list[int]] = {}  # every uuid-shaped run in its lower case
        self._exact: tuple[str, list[int]] | None = None  # built for a key without a uuid
        for i, rec in enumerate(records):
            for text in rec.strings:
                for found in _UUID_ANYWHERE.finditer(text.lower()):
                    _append_once(self._by_uuid, found.group(1), i)
                text = nfc(text.strip())
                for name in (text, text.rpartition("/")[2]) if "/" in text else (text,):
                    _append_once(self._by_text, name, i)

    def named(self, up: Upload) -> list[int]:
        """Positions (ascending) of the records one of whose strings names the upload,
        sizes agreeing."""
        if "/" in up.file_name:  # outside what the index models
            return [i for i, rec in enumerate(self.records) if _named(up, rec, {})]
        return [i for i in self._by_text.get(nfc(up.file_name), ())
                if _sizes_agree(up, self.records[i])]

    def proof(self, up: Upload) -> list[int]:
        """Positions (ascending) of the records that `_proof(up, record)` holds for.

        A key holding a uuid is in a string only where its uuid is in that string's lower
        case, so the uuid's records are the answer; a key without one (never PracSuite's)
        is searched for in the records' text, once per such upload."""
        uuid = up.uuid
        if uuid:
            return self._by_uuid.get(uuid, [])
        if not up.key:
            return []
        if _SEP in up.key:  # outside what the text search models
            return [i for i, rec in enumerate(self.records) if _proof(up, rec)]
        if self._exact is None:
            blobs = [_SEP.join(rec.strings) + _SEP for rec in self.records]
            starts = list(itertools.accumulate((len(b) for b in blobs), initial=0))[:-1]
            self._exact = ("".join(blobs), starts)
        return sorted(set(_occurrences(self._exact[0], up.key, self._exact[1])))


# Every position where a uuid starts (overlapping, unlike findall): a uuid is in a string
# exactly when it is one of these.
_UUID_ANYWHERE = re.compile(r"(?=([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}))")


def uuids_in(text: str) -> set[str]:
    """Every uuid-shaped run in `text`'s lower case (overlapping ones too): an upload's
    uuid is in `text` (as `_proof` asks) exactly when it is one of these."""
    return {found.group(1) for found in _UUID_ANYWHERE.finditer(text.lower())}


def _append_once(index: dict[str, list[int]], key: str, position: int) -> None:
    positions = index.setdefault(key, [])
    if not positions or positions[-1] != position:
        positions.append(position)


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


def names_to_read(records: list[RecordView], uploads: list[Upload], excluded: Set[str],
                  first: Evidence, known: Mapping[str, str]) -> list[str]:
    """After a first `match`: the new records whose `presign_url` name must be read so
    that every lookalike is seen (not proven, not named by one of their own strings,
    claimable for one of `uploads`, not known yet, of a size an upload could have)."""
    unclaimable = in_every_snapshot(uploads).union(excluded)
    skip = named_already([r for r in records if r.record_id not in unclaimable], uploads,
                         first)
    return needs_name(records, unclaimable, skip, known, uploads)


def named_already(records: list[RecordView], uploads: Iterable[Upload], first: Evidence
                  ) -> set[str]:
    """Of claimable `records`, those a first `match` proved, or that name one of
    `uploads` by their own strings, sizes agreeing: their `presign_url` name is not
    needed (`names_to_read`)."""
    skip = set(first.proven.values())
    index = _Candidates(records)
    for up in uploads:
        skip.update(index.records[i].record_id for i in index.named(up))
    return skip
