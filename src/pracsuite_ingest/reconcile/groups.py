"""A big poll in groups of names (pure): what a poll keeps of every upload is a few
tens of bytes; the uploads themselves are read a group at a time.

A poll of one patient's 100,000 uploads held every upload (key, name, sha256: some 450
bytes each) and every decision about it at once: 194 MB. Yet what decides an upload's
claim is only the records linked to it: by its key's uuid (proof), or by its name (a
record's string, or the name `presign_url` gives, sizes agreeing). So the poll's
uploads are cut, in the order of their NFC names, into groups of about `GROUP` uploads,
each holding whole names (`UploadIndex`: every upload of a name is in one group, which
is what the count of name-and-size matches, `claims.crowded_at`, needs). Each record
goes to the groups its uuids and names point to (`record_groups`); a record pointing
to two groups joins them into one, so that every link between an upload and a record
stays inside one group. `match` and `decide_claims` on one group's uploads and records
then answer, for those uploads, exactly what they answer on all of them: a record is
taken, counted or claimed only through a link, and every link is inside its group.

Kept for the whole poll, per upload: the hash of its uuid and of its name, its group,
its id and size, in arrays (`UploadIndex`, some 40 bytes); the group boundaries are one
name per group. A hash that collides can only keep a record's string or join two
groups that needed not be: more kept, never less. Uploads whose key holds no uuid, or
whose name holds a "/", are compared outside what the indexes model (`facts.FEW`):
then every record is in the one group, as before.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from pracsuite_ingest import MAX_FILE_BYTES
from pracsuite_ingest.reconcile.match import RecordView, Upload, in_all, nfc, uuids_in

GROUP = 2000  # uploads in a group (more where one name has more)


class HashedSet:
    """Strings as their hashes, sorted (8 bytes each): `in` may say yes for a string
    not added (a collision), never no for one added."""

    def __init__(self, hashes: Iterable[int] = ()) -> None:
        self._h = array("q", sorted(set(hashes)))

    @classmethod
    def of(cls, strings: Iterable[str]) -> HashedSet:
        return cls(hash(s) for s in strings)

    def __contains__(self, text: object) -> bool:
        if not isinstance(text, str):
            return False
        h = hash(text)
        i = bisect.bisect_left(self._h, h)
        return i < len(self._h) and self._h[i] == h

    def __len__(self) -> int:
        return len(self._h)

    def isdisjoint(self, strings: Iterable[str]) -> bool:
        return not any(s in self for s in strings)


@dataclass
class UploadIndex:
    """What a poll keeps of each of its waiting uploads (`add` them in the order of
    their NFC names, then `done`)."""

    boundaries: list[str] = field(default_factory=list)  # the first name of each group
    count: int = 0
    max_size: int | None = None
    any_size: bool = False  # an upload of unknown size (it agrees with every record)
    raw_keys: list[str] = field(default_factory=list)  # keys without a uuid (a few kept)
    slash_names: list[str] = field(default_factory=list)  # names holding "/" (a few kept)
    befores: dict[int, frozenset[str]] = field(default_factory=dict)  # distinct snapshots
    _ids: array[int] = field(default_factory=lambda: array("q"))
    _sizes: set[int] | array[int] = field(default_factory=set)
    _name_hashes: array[int] = field(default_factory=lambda: array("q"))
    _uuid_hashes: array[int] = field(default_factory=lambda: array("q"))
    _uuid_groups: array[int] = field(default_factory=lambda: array("l"))
    _in_group: int = 0
    _last_name: str | None = None
    names: HashedSet = field(default_factory=HashedSet)
    uuids: HashedSet = field(default_factory=HashedSet)
    odd: bool = False  # a raw key or a slash name: one group for everything

    def add(self, up: Upload, name: str) -> None:
        """`name`: the upload's name in NFC, not before the last one added."""
        if name != self._last_name:
            if not self.boundaries or self._in_group >= GROUP:
                self.boundaries.append(name)
                self._in_group = 0
            self._last_name = name
            self._name_hashes.append(hash(name))
        self._in_group += 1
        self.count += 1
        self._ids.append(up.item_id)
        if up.size is None:
            self.any_size = True
        else:
            if isinstance(self._sizes, set) and len(self._sizes) < 4096:
                self._sizes.add(up.size)
            else:  # many sizes: as an array, sorted at `done`
                if isinstance(self._sizes, set):
                    self._sizes = array("q", self._sizes)
                self._sizes.append(up.size)
            self.max_size = up.size if self.max_size is None else max(self.max_size, up.size)
        self.befores.setdefault(id(up.before), up.before)
        uuid = up.uuid
        if uuid:
            self._uuid_hashes.append(hash(uuid))
            self._uuid_groups.append(len(self.boundaries) - 1)
        elif up.key:
            self.odd = True
            if len(self.raw_keys) <= 32:
                self.raw_keys.append(up.key)
        if "/" in up.file_name:
            self.odd = True
            if len(self.slash_names) <= 32:
                self.slash_names.append(up.file_name)

    def done(self) -> UploadIndex:
        self._ids = array("q", sorted(self._ids))
        if isinstance(self._sizes, array):
            self._sizes = array("q", sorted(set(self._sizes)))
        order = sorted(range(len(self._uuid_hashes)), key=self._uuid_hashes.__getitem__)
        self._uuid_hashes = array("q", (self._uuid_hashes[i] for i in order))
        self._uuid_groups = array("l", (self._uuid_groups[i] for i in order))
        del order
        self.names = HashedSet(self._name_hashes)
        self.uuids = HashedSet(self._uuid_hashes)
        self._name_hashes = array("q")
        if self.odd:
            self.boundaries = self.boundaries[:1]
        return self

    # ------------------------------------------------------------------ questions
    @property
    def groups(self) -> int:
        return len(self.boundaries)

    @property
    def size_limit(self) -> int:
        """The most bytes a record may hold to be one of these uploads."""
        return self.max_size if self.max_size is not None else MAX_FILE_BYTES

    @property
    def hidden(self) -> frozenset[str]:
        """Records in the snapshot of every upload: a candidate for none of them."""
        return in_all(self.befores.values())

    @property
    def largest_before(self) -> int:
        return max((len(b) for b in self.befores.values()), default=0)

    def has(self, item_id: int) -> bool:
        i = bisect.bisect_left(self._ids, item_id)
        return i < len(self._ids) and self._ids[i] == item_id

    def size_wanted(self, size: int | None) -> bool:
        """A record of `size` may be one of these uploads (`match.needs_name`'s rule)."""
        if self.any_size or size is None or not self.count:
            return True
        if isinstance(self._sizes, set):
            return size in self._sizes
        i = bisect.bisect_left(self._sizes, size)
        return i < len(self._sizes) and self._sizes[i] == size

    def range_of(self, group: int) -> tuple[str, str | None]:
        """The names of a group: from the first (included) to the second (excluded;
        None: to the end)."""
        if self.odd:
            return self.boundaries[0], None
        hi = self.boundaries[group + 1] if group + 1 < len(self.boundaries) else None
        return self.boundaries[group], hi

    def group_of_name(self, name: str) -> int:
        """The group an upload named `name` (NFC) would be in; -1: none of them is."""
        if name not in self.names:
            return -1
        return 0 if self.odd else bisect.bisect_right(self.boundaries, name) - 1

    def group_of_uuid(self, uuid: str) -> int:
        h = hash(uuid)
        i = bisect.bisect_left(self._uuid_hashes, h)
        if i < len(self._uuid_hashes) and self._uuid_hashes[i] == h:
            return 0 if self.odd else self._uuid_groups[i]
        return -1

    def groups_of(self, rec: RecordView, name: str | None) -> list[int]:
        """The groups whose uploads `rec` may be linked to: by a uuid or a name in its
        strings, or by `name` (its `presign_url` name, when known)."""
        if self.odd:
            return [0]
        out: list[int] = []
        for text in rec.strings:
            out += [g for u in uuids_in(text) if (g := self.group_of_uuid(u)) >= 0]
            text = nfc(text.strip())
            for key in (text, text.rpartition("/")[2]) if "/" in text else (text,):
                if (g := self.group_of_name(key)) >= 0:
                    out.append(g)
        if name is not None and (g := self.group_of_name(nfc(name))) >= 0:
            out.append(g)
        return out


@dataclass(frozen=True, slots=True)
class Group:
    """Upload groups joined by their records (`members`, ascending), and the positions
    of those records in the poll's list."""

    members: list[int]
    records: array[int]


def record_groups(records: Sequence[RecordView], names: Mapping[str, str],
                  index: UploadIndex, only: Set[int] | None = None) -> list[Group]:
    """The groups that records link to, each record in exactly one (two groups a record
    links to are joined); groups no record links to are left out. `only`: the positions
    of the records to consider (default: all)."""
    parent = list(range(index.groups))

    def root(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    of = array("l", [-1]) * len(records)
    for i, rec in enumerate(records):
        if only is not None and i not in only:
            continue
        linked = index.groups_of(rec, names.get(rec.record_id))
        if not linked:
            continue
        first = root(linked[0])
        for g in linked[1:]:
            parent[root(g)] = first
        of[i] = linked[0]
    by_root: dict[int, array[int]] = {}  # 4 bytes a record, not a list's 36
    for i, g in enumerate(of):
        if g >= 0:
            by_root.setdefault(root(g), array("l")).append(i)
    members: dict[int, list[int]] = {}
    for g in range(index.groups):
        if root(g) in by_root:
            members.setdefault(root(g), []).append(g)
    return [Group(members[r], by_root[r]) for r in sorted(by_root)]


def in_item_order(uploads: Iterable[Upload], index: UploadIndex) -> list[Upload]:
    """The uploads the index holds (read again from the state, where uploads that ended
    since the index was built are not this poll's), in item order."""
    return sorted((u for u in uploads if index.has(u.item_id)), key=lambda u: u.item_id)
