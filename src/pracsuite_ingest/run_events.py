"""What happens to one item during a `run`, written in one place: each event moves the
item's stage in the state file, counts it, and logs it, together.

`Run` (pipeline.py) says *what* happened (`uploaded`, `failed`, `lost`, ...); this
module is where the stage, the counter and the log line of each event are kept in step.
The log is the item's own (bound to its client and row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pracsuite_ingest.admission import Admission
from pracsuite_ingest.counters import Counters
from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.refusals import dry_run_error
from pracsuite_ingest.state import ItemRecord, State
from pracsuite_ingest.state_commits import GroupCommits

NOT_SENT = "not started: the run was interrupted; the next run sends it"


class RunEvents:
    """The item events of one run (`run_id`), into `state`, `counters` and the log."""

    def __init__(self, state: State, run_id: str, counters: Counters) -> None:
        self.state = state
        self.run_id = run_id
        self.counters = counters
        self._commits: GroupCommits | None = None  # made in the loop, at the first upload
        self._posting: set[int] = set()  # items whose upload (POST) may have begun

    @property
    def commits(self) -> GroupCommits:
        if self._commits is None:
            self._commits = GroupCommits(self.state)
        return self._commits

    def close(self) -> None:
        """The run's end: commit what is pending."""
        if self._commits is not None:
            self._commits.close()

    # ------------------------------------------------------------ scan and admission
    def not_started(self, seq: int, row: Row) -> None:
        """A row the run did not start (stopping): `pending`, the next run sends it."""
        self.state.add_item(self.run_id, seq, row, None, Stage.SEEN, error=NOT_SENT)

    def invalid(self, seq: int, row: Row, reason: str, log: Any) -> None:
        self.state.add_item(self.run_id, seq, row, None, Stage.INVALID, error=reason)
        self.counters.tally(Stage.INVALID)
        log.warning("item invalid", stage="scan", reason=reason, path=row.path)

    def duplicate(self, seq: int, local: LocalFile, admission: Admission,
                  earlier: ItemRecord, log: Any) -> None:
        """An earlier row of this run has the same client, name and content."""
        self.state.add_item(self.run_id, seq, local.row, local, Stage.SKIPPED,
                            error=admission.reason, duplicate_of=earlier.id)
        self.counters.skipped(Stage.SKIPPED, "duplicate row")
        log.debug("item skipped", stage="admit", reason="duplicate row")

    def validated_earlier(self, seq: int, local: LocalFile, admission: Admission,
                          earlier: ItemRecord, log: Any, identity: str | None = None) -> None:
        self.state.add_item(self.run_id, seq, local.row, local, Stage.SKIPPED,
                            error=admission.reason, key=earlier.key,
                            attachment_id=earlier.attachment_id, disk_identity=identity)
        self.counters.skipped(Stage.SKIPPED, "validated earlier")
        log.debug("item skipped", stage="admit", reason="validated earlier")

    def unchanged(self, seq: int, row: Row, earlier: ItemRecord, identity: str,
                  log: Any) -> None:
        """The file is as it was when an earlier run's upload of this row was
        validated (its identity on disk unchanged): skipped, not read."""
        kept = LocalFile(row, Path(row.path), earlier.size or 0, earlier.sha256 or "")
        self.state.add_item(self.run_id, seq, row, kept, Stage.SKIPPED,
                            error=(f"unchanged since run {earlier.run_id} (attachment "
                                   f"{earlier.attachment_id}); not read again"),
                            key=earlier.key, attachment_id=earlier.attachment_id,
                            disk_identity=identity)
        self.counters.skipped(Stage.SKIPPED, "unchanged on disk")
        log.debug("item skipped", stage="admit", reason="unchanged on disk")

    def planned(self, seq: int, local: LocalFile, earlier: ItemRecord | None) -> None:
        """Dry run: what would be sent (or reconciled, when an earlier run sent it)."""
        row = local.row
        error = (dry_run_error(self.state.sends_of(row.client_id, row.file_name, local.sha256),
                               local.size) if earlier else None)
        self.state.add_item(self.run_id, seq, row, local, Stage.SEEN, error=error)
        self.counters.tally(Stage.SEEN)
        self.counters.bytes_to_send += local.size if earlier is None else 0

    def carried(self, seq: int, local: LocalFile, earlier: ItemRecord, log: Any) -> None:
        """An earlier run's upload reached S3, or may have: reconciled, not sent again."""
        lost = earlier.stage is Stage.UPLOADING or earlier.outcome_unknown
        stage = Stage.UPLOADING if lost else Stage.UPLOADED
        self.state.add_item(self.run_id, seq, local.row, local, stage, key=earlier.key,
                            snapshot_run=earlier.snapshot_run or earlier.run_id,
                            outcome_unknown=lost, uploaded_at=earlier.uploaded_at)
        self.counters.tally(stage)
        log.info("item carried to reconcile", stage="admit", from_run=earlier.run_id)

    def given_up(self, seq: int, local: LocalFile, admission: Admission,
                 earlier: ItemRecord, log: Any) -> None:
        """Sent as often as reconcile.max_resends allows and never taken: `missing`,
        settled (no reconcile waits for it)."""
        self.state.add_item(self.run_id, seq, local.row, local, Stage.MISSING,
                            error=admission.reason, key=earlier.key,
                            snapshot_run=earlier.snapshot_run or earlier.run_id,
                            uploaded_at=earlier.uploaded_at, settled=True)
        self.counters.tally(Stage.MISSING)
        log.warning("item not sent again: PracSuite did not take it", stage="admit",
                    from_run=earlier.run_id)

    def admitted(self, seq: int, local: LocalFile, identity: str | None = None,
                 replaces: str | None = None) -> int:
        """A file to send; returns its item id. `replaces`: the attachment an earlier
        run validated for this row with other content (PracSuite keeps it)."""
        item_id = self.state.add_item(self.run_id, seq, local.row, local, Stage.SEEN,
                                      snapshot_run=self.run_id, disk_identity=identity,
                                      replaces=replaces)
        self.counters.bytes_to_send += local.size
        return item_id

    # ------------------------------------------------------------ presign and upload
    def presigned(self, item_id: int, key: str) -> None:
        # This run's snapshot was taken before this upload: it is what the record must
        # not be part of.
        self.state.set_stage(item_id, Stage.PRESIGNED, key=key, snapshot_run=self.run_id)

    def not_sent(self, item_id: int, log: Any | None = None) -> None:
        """Presigned, never sent: the run is stopping (`pending`)."""
        self.state.set_stage(item_id, Stage.PRESIGNED, error=NOT_SENT)
        if log is not None:
            log.debug("item not sent: stopping", stage="upload")

    def sending(self, item_id: int, attempts: int, *, new_key: bool) -> None:
        """An attempt starts; `new_key`: the first with this presigned key (a send,
        counted over every run against reconcile.max_resends). On return the move to
        `uploading` with this key is kept (the send log, `State.start_upload`): a kill
        from then on leaves the next run the key, to reconcile before anything is
        sent again. Only then may the POST begin."""
        self.commits.start()
        self.state.start_upload(item_id, attempts, new_key=new_key)
        self._posting.add(item_id)

    def uploaded(self, item_id: int, local: LocalFile, at: float, attempts: int,
                 log: Any) -> None:
        self.state.set_stage(item_id, Stage.UPLOADED, uploaded_at=at, error=None,
                             outcome_unknown=False)
        self._posting.discard(item_id)  # no longer `uploading`: the set stays small
        self.counters.bytes_sent += local.size
        self.counters.tally(Stage.UPLOADED)
        log.debug("item uploaded", stage="upload", attempts=attempts,
                  file_name=local.row.file_name)

    def failed(self, item_id: int, error: str, local: LocalFile, log: Any, *,
               nothing_stored: bool = False) -> None:
        """The upload failed for good. `nothing_stored` (the file changed while sent):
        the report shows no size or hash S3 does not hold."""
        cleared: dict[str, Any] = {"size": None, "sha256": None} if nothing_stored else {}
        self.state.set_stage(item_id, Stage.FAILED, error=error, **cleared)
        self._posting.discard(item_id)
        self.counters.tally(Stage.FAILED)
        log.warning("item failed", stage="upload", error=error,
                    file_name=local.row.file_name)

    def lost(self, item_id: int, error: str, log: Any) -> None:
        """S3's answer was lost: the upload may be stored; reconcile decides."""
        self.state.set_stage(item_id, Stage.UPLOADING, outcome_unknown=True,
                             error=f"{error}; reconciling before any re-send")
        self.counters.tally(Stage.UPLOADING)
        log.warning("upload outcome unknown", stage="upload", error=error)

    def _never_sent(self, current: ItemRecord | None) -> bool:
        """Presigned (waiting for a slot), or `uploading` with no upload begun."""
        return current is not None and (current.stage is Stage.PRESIGNED or (
            current.stage is Stage.UPLOADING and current.id not in self._posting))

    def cancelled(self, item_id: int) -> None:
        """Stopped at once: a file presigned and never sent is `pending`."""
        if self._never_sent(self.state.item(item_id)):
            self.not_sent(item_id)

    def unexpected(self, item_id: int, exc: Exception, log: Any) -> None:
        """A bug in one file's path: recorded so that the others go on."""
        what = f"unexpected error ({type(exc).__name__}); please report it"
        current = self.state.item(item_id)
        if (current is not None and current.stage is Stage.SEEN) or self._never_sent(current):
            self.state.set_stage(item_id, Stage.FAILED, error=what)
            self.counters.tally(Stage.FAILED)
        elif current is not None and current.stage is Stage.UPLOADING:
            # The body may have gone out: reconcile before anything is sent again.
            self.state.set_stage(item_id, Stage.UPLOADING, outcome_unknown=True,
                                 error=f"{what}; reconciling before any re-send")
        log.error("unexpected error", stage="upload", error_type=type(exc).__name__)
