"""What a poll claims on the evidence, under `reconcile.verify` (pure).

`VerifyMode` holds the setting's rules, in this one place. A name-and-size match is
*single* where one new record and one waiting upload share that name and size at the
poll, and no earlier poll of the round found the upload *crowded* (more records of its
name and size than uploads of it, or one record named for several uploads). Then:
- `all` claims only records whose bytes (their storage checksum, or a download,
  `verification.py`) equal the file's, proof or not;
- `ambiguous` (the default) claims a record carrying the upload's key (proof) and a
  single match without reading anything, and lets the bytes decide a crowded one;
- `off` reads no bytes: it claims proof and single matches, and leaves a crowded one
  unclaimed (the end-of-deadline verdict says why, `verdict.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from enum import StrEnum

from pracsuite_ingest.reconcile.match import Evidence, Upload


class VerifyMode(StrEnum):
    """`reconcile.verify`: when the bytes of a record decide whether it is ours."""

    OFF = "off"
    AMBIGUOUS = "ambiguous"
    ALL = "all"

    @property
    def bytes_decide_names(self) -> bool:
        """Every name-and-size match is claimed only once its bytes are the file's (and a
        record named like a waiting upload is worth reading as soon as it is seen)."""
        return self is VerifyMode.ALL

    @property
    def bytes_decide_crowds(self) -> bool:
        """Where name and size cannot tell ours from another's, the bytes decide."""
        return self is not VerifyMode.OFF

    @property
    def bytes_decide_proof(self) -> bool:
        """Even a record carrying the upload's key is claimed only on its bytes."""
        return self is VerifyMode.ALL


@dataclass(frozen=True, slots=True)
class Digest:
    """What a record's bytes are: their count, and their sha256 (a download) or only
    their MD5 (the storage's checksum, `verification.py`; `sha256` is then None)."""

    size: int
    sha256: str | None
    md5: str | None = None


@dataclass(frozen=True, slots=True)
class Claims:
    """`claims`: item -> (record, whether its bytes were compared); `download`: records
    whose bytes (or checksum) must be read before anything more can be decided;
    `crowded`: uploads this poll found crowded (name and size cannot tell), with their
    candidates; `ambiguous` (verify off): those of them left unclaimed; `differ`:
    records whose bytes are not the upload's (never claimed for it); `unread`: uploads
    left unclaimed for want of a candidate's bytes, with those candidates."""

    claims: dict[int, tuple[str, bool]]
    download: list[str]
    ambiguous: dict[int, list[str]]
    differ: dict[int, list[str]]
    crowded: dict[int, list[str]]
    unread: dict[int, list[str]]


def decidable(up: Upload, digest: Digest) -> bool:
    """The digest can say whether the record is `up`'s: a download's sha256, or the
    storage's MD5 where the file's MD5 is known."""
    return digest.sha256 is not None or (digest.md5 is not None and up.md5 is not None)


def is_ours(up: Upload, digest: Digest) -> bool:
    """The record's bytes (sha256) or the storage's checksum of them (MD5) are `up`'s."""
    if up.size is not None and digest.size != up.size:
        return False
    if digest.sha256 is not None:
        return up.sha256 is not None and digest.sha256 == up.sha256
    return up.md5 is not None and digest.md5 == up.md5


def crowded_at(uploads: Iterable[Upload], evidence: Evidence, taken: Set[str] = frozenset()
               ) -> dict[int, list[str]]:
    """The uploads whose name-and-size candidates (not in `taken`) do not single one
    record out: more than one candidate, or a candidate named for another upload too.
    The count the contract's `ambiguous` is about, at one poll (pure)."""
    named = {up.item_id: [r for r in evidence.named.get(up.item_id, ()) if r not in taken]
             for up in uploads if up.item_id not in evidence.proven}
    named_by: dict[str, int] = {}
    for records in named.values():
        for rid in records:
            named_by[rid] = named_by.get(rid, 0) + 1
    return {item_id: records for item_id, records in named.items()
            if len(records) > 1 or any(named_by[rid] > 1 for rid in records)}


def decide_claims(uploads: Iterable[Upload], evidence: Evidence, verify: VerifyMode | str,
                  digests: Mapping[str, Digest], crowded: Set[int] = frozenset()) -> Claims:
    """Claims under `verify`, given the digests of the records read so far. Pure;
    uploads in item order, each record claimed once.

    A record whose bytes differ from the upload's is never claimed for it. `crowded`:
    uploads an earlier poll of this round found crowded (the reconciler remembers them
    across polls): a name-and-size match of theirs is never single again.
    """
    mode = VerifyMode(verify)
    pending = sorted(uploads, key=lambda u: u.item_id)
    taken = {rid for rid in evidence.proven.values()} if not mode.bytes_decide_proof else set()
    now = crowded_at(pending, evidence, taken)
    out = Claims({}, [], {}, {}, now, {})
    wanted: set[str] = set()

    def by_bytes(up: Upload, records: list[str]) -> None:
        for rid in records:
            digest = digests.get(rid)
            if digest is None or not decidable(up, digest):
                out.unread.setdefault(up.item_id, []).append(rid)
                if rid not in wanted:
                    wanted.add(rid)
                    out.download.append(rid)
            elif is_ours(up, digest):
                out.claims[up.item_id] = (rid, True)
                out.unread.pop(up.item_id, None)
                taken.add(rid)
                return
            else:
                out.differ.setdefault(up.item_id, []).append(rid)

    for up in pending:
        proven = evidence.proven.get(up.item_id)
        if proven is not None:
            if mode.bytes_decide_proof:
                by_bytes(up, [proven])
            else:
                out.claims[up.item_id] = (proven, False)
            continue
        named = [rid for rid in evidence.named.get(up.item_id, ()) if rid not in taken]
        if not named:
            continue
        single = up.item_id not in now and up.item_id not in crowded
        if mode.bytes_decide_names or (not single and mode.bytes_decide_crowds):
            by_bytes(up, named)
        elif single:
            _claim_single(up, named[0], digests, out)
            taken.add(named[0])
        else:
            out.ambiguous[up.item_id] = named
    return out


def _claim_single(up: Upload, rid: str, digests: Mapping[str, Digest], out: Claims) -> None:
    """A single match, claimed without reading anything, unless bytes already read
    say it is not ours (then never); `verified` when bytes already read say it is."""
    digest = digests.get(rid)
    if digest is not None and decidable(up, digest):
        if not is_ours(up, digest):
            out.differ.setdefault(up.item_id, []).append(rid)
            return
        out.claims[up.item_id] = (rid, True)
        return
    out.claims[up.item_id] = (rid, False)
