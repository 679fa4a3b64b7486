"""What a poll claims on the evidence, under `reconcile.verify` (pure).

`VerifyMode` holds the setting's rules, in this one place:
- `all` claims only records whose bytes (downloaded, `verification.py`) equal the file's;
- `ambiguous` (the default) lets the bytes decide wherever name and size are all there
  is, and claims a record carrying the upload's key (proof) without reading it;
- `off` downloads nothing, and claims a name-and-size match only where exactly one new
  record and one upload share that name and size at the poll (two or more: not
  claimed; the end-of-deadline verdict says why, `verdict.py`).
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
        """A name-and-size match is claimed only once its bytes are the file's (and a
        record named like a waiting upload is worth downloading as soon as it is seen)."""
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
    whose bytes (or checksum) must be read before anything more can be decided; `ambiguous`
    (verify off): uploads left unclaimed, with the records name and size cannot tell
    apart; `differ`: records whose bytes are not the upload's (never claimed for it)."""

    claims: dict[int, tuple[str, bool]]
    download: list[str]
    ambiguous: dict[int, list[str]]
    differ: dict[int, list[str]]


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


def decide_claims(uploads: Iterable[Upload], evidence: Evidence, verify: VerifyMode | str,
                  digests: Mapping[str, Digest], crowded: Set[int] = frozenset()) -> Claims:
    """Claims under `verify`, given the digests of the records downloaded so far. Pure;
    uploads in item order, each record claimed once.

    A record whose bytes differ from the upload's is never claimed for it. With
    "off", a name-and-size match is claimed only where one record and one upload share
    it (counting every upload that names that record), and never for an upload in
    `crowded`: one that an earlier poll of this round found ambiguous (the reconciler
    remembers it across polls).
    """
    mode = VerifyMode(verify)
    pending = sorted(uploads, key=lambda u: u.item_id)
    claims: dict[int, tuple[str, bool]] = {}
    download: list[str] = []
    ambiguous: dict[int, list[str]] = {}
    differ: dict[int, list[str]] = {}
    taken: set[str] = set()

    def by_bytes(up: Upload, records: list[str]) -> None:
        for rid in records:
            digest = digests.get(rid)
            if digest is None or not decidable(up, digest):
                if rid not in download:
                    download.append(rid)
            elif is_ours(up, digest):
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
            if mode.bytes_decide_proof:
                by_bytes(up, [proven])
            else:
                claims[up.item_id] = (proven, False)
                taken.add(proven)
            continue
        named = [rid for rid in evidence.named.get(up.item_id, ()) if rid not in taken]
        if not named:
            continue
        if mode.bytes_decide_names:
            by_bytes(up, named)
        elif len(named) == 1 and named_by[named[0]] == 1 and up.item_id not in crowded:
            claims[up.item_id] = (named[0], False)
            taken.add(named[0])
        else:
            ambiguous[up.item_id] = named
    return Claims(claims, download, ambiguous, differ)
