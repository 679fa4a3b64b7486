"""What to do with a checked file, given what the state file already knows (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pracsuite_ingest.models import Stage
from pracsuite_ingest.state import ItemRecord


class Action(StrEnum):
    SEND = "send"
    SKIP = "skip"
    DUPLICATE = "duplicate"
    RECONCILE = "reconcile"


@dataclass(frozen=True, slots=True)
class Admission:
    action: Action
    earlier: ItemRecord | None = None
    reason: str | None = None


def admit(same_in_run: ItemRecord | None, earlier: ItemRecord | None) -> Admission:
    """The rule that keeps every file sent at most once.

    - an earlier row of this run with the same client, name and content: skip this one;
    - an earlier run validated it: skip, carrying its record id;
    - an earlier run's upload reached S3, or may have (stage `uploading` after a crash,
      `uploaded`, or `missing`, whether after a 204 or with its answer lost): reconcile
      it first; this run sends it again only if PracSuite shows no record by the
      deadline (the resend rounds of `Run.execute`);
    - otherwise: send.
    """
    if same_in_run is not None:
        return Admission(Action.DUPLICATE, same_in_run,
                         f"same client, file name and content as line {same_in_run.line} "
                         f"(row {same_in_run.seq}) of this run; sent once")
    if earlier is None:
        return Admission(Action.SEND)
    if earlier.stage is Stage.VALIDATED:
        return Admission(Action.SKIP, earlier,
                         f"already validated by run {earlier.run_id} "
                         f"(attachment {earlier.attachment_id})")
    if earlier.stage in (Stage.UPLOADING, Stage.UPLOADED, Stage.MISSING):
        return Admission(Action.RECONCILE, earlier)
    return Admission(Action.SEND, earlier)
