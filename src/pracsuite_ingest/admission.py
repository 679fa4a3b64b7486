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
      or `uploaded`, or `missing` after a confirmed 204): reconcile it, do not re-send;
    - an earlier run's upload whose answer was lost and that got no record by its
      deadline (`missing` with `outcome_unknown`): send again;
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
    if earlier.stage is Stage.MISSING and earlier.outcome_unknown:
        return Admission(Action.SEND, earlier)
    if earlier.stage in (Stage.UPLOADING, Stage.UPLOADED, Stage.MISSING):
        return Admission(Action.RECONCILE, earlier)
    return Admission(Action.SEND, earlier)
