"""What a walk keeps of each record (pure): a few facts, never the record itself.

A page of PracSuite's list is parsed, and each of its records reduced at once to what
proof needs, before the next page is asked for:
- for a snapshot, the record's id (`record_id`);
- for a poll, a `RecordView` (id, size, own `presign_url` link, and the record's
  strings) of the records that may be one of the poll's uploads (`Relevant.view`).

`Relevant` keeps a record's string only where `match.py` could see it: a string that
holds one of the uploads' uuids (or a key without one), or that names one of the
uploads as `match._names_equal` compares names. Every other string (links, dates, a
description naming another file) can neither prove nor name any of these uploads, so
`match` and `names_to_read` answer the same on the kept strings as on all of them. A
record no upload may claim (claimed already, or in every upload's snapshot:
`match.in_every_snapshot`) is counted by the walk but not kept at all. A poll of one
patient's 100,000 new records used to hold every string of every record (links, dates:
some 640 bytes a record) while it matched.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, overload

from pracsuite_ingest.api import record_links
from pracsuite_ingest.reconcile.match import (
    RecordView,
    Upload,
    _names_equal,
    in_every_snapshot,
    nfc,
    uuids_in,
)

if TYPE_CHECKING:
    from pracsuite_ingest.reconcile.groups import UploadIndex

# Uploads whose key holds no uuid, or whose name holds a "/", are compared string by
# string (outside what the indexes model, and never PracSuite's own keys); past this many
# in one poll, every string is kept instead.
FEW = 32


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


def _size(record: Mapping[str, Any]) -> int | None:
    size = record.get("file_size")
    try:
        return int(size) if size not in (None, "") else None
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON 1e999
        return None


def view(record: Mapping[str, Any]) -> RecordView | None:
    """The record with every one of its strings (None: it has no id)."""
    rid = record_id(record)
    if rid is None:
        return None
    link = record_links(record).get("presign_url", "")
    return RecordView(rid, tuple(_strings(record)), _size(record), link)


class Members(Protocol):
    """A set of strings as `Relevant` asks it (a frozenset, or `groups.HashedSet`)."""

    def __contains__(self, text: object, /) -> bool: ...

    def __len__(self) -> int: ...

    def isdisjoint(self, strings: Iterable[str], /) -> bool: ...


@dataclass(frozen=True, slots=True)
class Relevant:
    """What of a record one poll's uploads can use (`Relevant.of(uploads, excluded)`)."""

    hidden: frozenset[str]  # claimable by none of the uploads
    uuids: Members  # the uploads' uuids, lower case
    names: Members  # the uploads' file names in NFC (those without a "/")
    raw_keys: tuple[str, ...]  # keys without a uuid
    slash_names: tuple[str, ...]  # file names holding a "/"
    keep_all: bool  # too many of the two above: every string is kept
    plain_link: Callable[[str], str] | None = None  # a record's documented presign_url

    @classmethod
    def of(cls, uploads: Iterable[Upload], excluded: Set[str],
           plain_link: Callable[[str], str] | None = None) -> Relevant:
        """`plain_link(record_id)`: the `presign_url` asked for a record without a link of
        its own; a record's link equal to it is not kept (the same URL is asked)."""
        ups = list(uploads)
        uuids, names, raw, slash = set(), set(), [], []
        for up in ups:
            uuid = up.uuid
            if uuid:
                uuids.add(uuid)
            elif up.key:
                raw.append(up.key)
            (slash.append(up.file_name) if "/" in up.file_name
             else names.add(nfc(up.file_name)))
        return cls(in_every_snapshot(ups) | frozenset(excluded), frozenset(uuids),
                   frozenset(names), tuple(raw), tuple(slash), len(raw) + len(slash) > FEW,
                   plain_link)

    @classmethod
    def indexed(cls, index: UploadIndex, hidden: Set[str],
                plain_link: Callable[[str], str] | None = None) -> Relevant:
        """`of` the uploads `index` holds (by their hashes: a collision keeps a string
        that needed not be): `hidden`, the records none of them may claim."""
        raw, slash = tuple(index.raw_keys), tuple(index.slash_names)
        return cls(frozenset(hidden), index.uuids, index.names, raw, slash,
                   len(raw) + len(slash) > FEW, plain_link)

    def _kept(self, text: str) -> bool:
        if self.keep_all:
            return True
        if self.uuids and not self.uuids.isdisjoint(uuids_in(text)):
            return True
        stripped = nfc(text.strip())
        if stripped in self.names or ("/" in stripped and
                                      stripped.rpartition("/")[2] in self.names):
            return True
        return (any(key in text for key in self.raw_keys)
                or any(_names_equal(text, name) for name in self.slash_names))

    def view(self, record: Mapping[str, Any]) -> RecordView | None:
        """The record's facts for this poll; None when no upload may claim it."""
        rid = record_id(record)
        if rid is None or rid in self.hidden:
            return None
        link = record_links(record).get("presign_url", "")
        if link and self.plain_link is not None and link == self.plain_link(rid):
            link = ""  # some 110 bytes a record, for the URL asked anyway
        strings = tuple(s for s in _strings(record) if self._kept(s))
        return RecordView(rid, strings, _size(record), link)


class RecordFacts(Sequence[RecordView]):
    """A poll's walk, kept: a plain record (no string kept, no link of its own, the
    common case where the name is read through `presign_url`) as its id and size only,
    some 70 bytes less than its `RecordView`, which is made again when asked for; the
    others as their `RecordView`."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._sizes = array("q")  # -1: no size (a kept record's slot: 0)
        self._kept: dict[int, RecordView] = {}

    def append(self, rec: RecordView) -> None:
        size = rec.file_size
        if not rec.strings and not rec.presign_link and (size is None or size >= 0):
            self._sizes.append(-1 if size is None else size)
        else:
            self._kept[len(self._ids)] = rec
            self._sizes.append(0)
        self._ids.append(rec.record_id)

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, i: int) -> RecordView: ...

    @overload
    def __getitem__(self, i: slice) -> list[RecordView]: ...

    def __getitem__(self, i: int | slice) -> RecordView | list[RecordView]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        kept = self._kept.get(i)
        if kept is not None:
            return kept
        size = self._sizes[i]
        return RecordView(self._ids[i], (), None if size < 0 else size)
