"""The records a patient's uploads have claimed (in any run), kept in memory once read.

Every poll of a patient leaves out the records already claimed, and recognises an upload
whose own key claimed a record already (another row of the same upload). Read from the
state file at every poll, that was every claimed row of the patient, each on a page of
its own (the rows of many patients interleave): at 10^5 files over 20 patients, 134
read calls a file against 36 at 10^4 (bench/scale.py `reads`), a poll costing what the
state holds rather than what changed. Read once per patient and added to at each claim,
it stays exact: while a process holds the state's lock nothing else writes the file, and
a claim is final (`validated` has no next stage, transitions.py).

Kept small: the ids (what every poll must leave out) and a hash of each claiming key.
An upload whose key hash is among them is looked up in the state file (a rare case: an
upload claimed under another row; a hash shared by chance costs a look-up that finds
nothing), so the keys themselves (~100 bytes each) are not held.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class PatientClaims:
    """One patient's claimed record ids, and the hashes of the keys that claimed them."""

    ids: set[str] = field(default_factory=set)
    key_hashes: set[int] = field(default_factory=set)

    def add(self, record_id: str, key: str | None) -> None:
        self.ids.add(record_id)
        if key:
            self.key_hashes.add(hash(key))

    def may_have_claimed(self, key: str | None) -> bool:
        """Whether `key` may be one that claimed a record (if so, look it up)."""
        return bool(key) and hash(key) in self.key_hashes


class ClaimsMemo:
    """Patients' claims, each read from the state file once (`load`), then kept up by
    every claim the state writes (`claimed`)."""

    def __init__(self) -> None:
        self._patients: dict[str, PatientClaims] = {}

    def get(self, client_id: str) -> PatientClaims | None:
        return self._patients.get(client_id)

    def load(self, client_id: str, rows: Iterable[tuple[str, str | None]]) -> PatientClaims:
        """The patient's claims as the state file holds them: (record id, key) rows."""
        claims = PatientClaims()
        for record_id, key in rows:
            claims.add(record_id, key)
        self._patients[client_id] = claims
        return claims

    def claimed(self, client_id: str, record_id: str, key: str | None) -> None:
        """The state now holds this claim; a patient not read yet reads it when asked."""
        claims = self._patients.get(client_id)
        if claims is not None:
            claims.add(record_id, key)

    @property
    def holds_any(self) -> bool:
        return bool(self._patients)
