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
    GIVE_UP = "give_up"  # missing after every send reconcile.max_resends allows: left alone


@dataclass(frozen=True, slots=True)
class Admission:
    action: Action
    earlier: ItemRecord | None = None
    reason: str | None = None


def given_up_error(sends: int, earlier: ItemRecord, max_resends: int) -> str:
    """A file PracSuite did not take however often it was sent: what the item says."""
    return (f"PracSuite did not take this file: sent {sends} times over earlier runs "
            f"(the last by run {earlier.run_id}) and no record appeared; not sent again "
            f"nor waited for (reconcile.max_resends = {max_resends}). Check the file (an "
            "empty file, or a kind PracSuite refuses?); `pracsuite-ingest reconcile "
            f"--run-id {earlier.run_id}` looks once more")


def admit(same_in_run: ItemRecord | None, earlier: ItemRecord | None, sends: int = 0,
          max_resends: int | None = None) -> Admission:
    """The rule that keeps every file sent at most once.

    - an earlier row of this run with the same client, name and content: skip this one;
    - an earlier run validated it: skip, carrying its record id;
    - an earlier run's upload reached S3, or may have (stage `uploading` after a crash,
      `uploaded`, or `missing`, whether after a 204 or with its answer lost): reconcile
      it first; this run sends it again only if PracSuite shows no record by the
      deadline (the resend rounds of `Run.execute`), as long as it was sent fewer
      than 1 + `max_resends` times over every run (`sends`);
    - an earlier run's upload was `missing` after all those sends: give up (`missing`,
      neither sent nor waited for);
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
    if (earlier.stage is Stage.MISSING and not earlier.outcome_unknown
            and max_resends is not None and sends > max_resends):
        return Admission(Action.GIVE_UP, earlier, given_up_error(sends, earlier, max_resends))
    if earlier.stage in (Stage.UPLOADING, Stage.UPLOADED, Stage.MISSING):
        return Admission(Action.RECONCILE, earlier)
    return Admission(Action.SEND, earlier)
