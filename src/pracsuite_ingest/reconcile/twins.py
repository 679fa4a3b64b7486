"""Records holding the very bytes of an upload that this state file did not make (pure).

Two workers on one practice with separate state files (two operators, a copied
config) each send the same file: PracSuite then holds two records with identical
bytes, and nothing in a record tells which worker's upload it is. Each worker claims
one (`claims.py`: the bytes are the file's) and cannot tell that the other claims the
same. What it can do is say so: a claim whose bytes were compared, beside another new
record with the same bytes that no upload of this state file claimed, is reported with
"another upload of this file exists: attachment X". A lease in PracSuite is not
possible; the README says how to avoid two workers on one practice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pracsuite_ingest.reconcile.claims import Digest, is_ours
from pracsuite_ingest.reconcile.match import Evidence, Upload, record_order


def twins(claims: Mapping[int, tuple[str, bool]], uploads: Iterable[Upload],
          evidence: Evidence, digests: Mapping[str, Digest]) -> dict[int, list[str]]:
    """For each claim made on the bytes: the other new records of the same name and size
    for that upload (`evidence.named`: this patient's, none claimed by this state file)
    whose bytes (or the storage's checksum of them) were read and are the upload's,
    claimed by no upload of this poll."""
    taken = {record for record, _ in claims.values()}
    by_item = {u.item_id: u for u in uploads}
    found: dict[int, list[str]] = {}
    for item_id, (_record, verified) in claims.items():
        up = by_item.get(item_id)
        if not verified or up is None:
            continue
        same = [rid for rid in evidence.named.get(item_id, ())
                if rid not in taken and (d := digests.get(rid)) is not None
                and is_ours(up, d)]
        if same:
            found[item_id] = sorted(same, key=record_order)
    return found


def twins_text(records: list[str]) -> str:
    """The note a validated item carries when another record holds its very bytes."""
    return (f"another upload of this file exists: attachment {', '.join(records)} (the same "
            "bytes, not made by this state file: a second worker or state file on this "
            "practice?)")
