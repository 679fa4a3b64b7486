"""Wires the stages: scan -> check -> admit -> presign -> upload -> reconcile -> report.

Limits are taken before a task starts (the producer feels backpressure); every task
lives in one TaskGroup; a per-file failure is a recorded stage, never an exception
that cancels siblings. Only `Fatal` ends the run early.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from pracsuite_ingest import reconcile as rc
from pracsuite_ingest.admission import Action, admit
from pracsuite_ingest.api import PracSuiteClient
from pracsuite_ingest.bandwidth import BandwidthCap
from pracsuite_ingest.counters import Counters
from pracsuite_ingest.errors import (
    Fatal,
    OutcomeUnknown,
    Permanent,
    PolicyExpired,
    Retryable,
    SourceChanged,
)
from pracsuite_ingest.filters import NO_FILTER
from pracsuite_ingest.guards import tls_context
from pracsuite_ingest.logs import bind_context, get_logger
from pracsuite_ingest.models import LocalFile, Presigned, Row, Stage
from pracsuite_ingest.polling import UploadPhase, reconcile_run
from pracsuite_ingest.presign_ahead import PresignAhead
from pracsuite_ingest.rate_gate import RateGate
from pracsuite_ingest.retry import PolicyRetrier, retrying
from pracsuite_ingest.scan import check_local, read_rows
from pracsuite_ingest.settings import Settings
from pracsuite_ingest.shard import Shard, only_mine
from pracsuite_ingest.shared_limit import shared_limit_of
from pracsuite_ingest.state import ItemRecord, State
from pracsuite_ingest.upload import upload_file

__all__ = ["Counters", "Run", "make_client", "make_session", "new_run_id", "reconcile_run",
           "upload_timeout", "utc_now"]

MAX_PRESIGN_ROUNDS = 8  # a policy that S3 keeps calling expired: a slow link
MAX_RESEND_ROUNDS = 4  # uploads whose answer was lost and that got no record: send again
NOT_SENT = "not started: the run was interrupted; the next run sends it"


STALL_FLOOR_S = 60.0
MIN_BYTES_PER_S = 64 * 1024  # slower than this, an upload counts as stalled


def upload_timeout(size: int, cap_s: float, share_bytes_per_s: float = 0.0,
                   ) -> aiohttp.ClientTimeout:
    """How long one upload may take: a floor plus the size at a minimal speed, capped.

    A stalled upload is cut at this point and, as its body never fully went out,
    sent again at once (`upload.body_fully_sent`). The answer itself must start
    within two minutes of the body going out. Under a bandwidth cap, an upload's
    `share_bytes_per_s` of it may be slower than the stall speed: half that share is
    the minimal speed then, and `cap_s` (upload.timeout_s) does not apply, so that the
    pace the operator chose never makes an upload look stalled.
    """
    if 0 < share_bytes_per_s < 2 * MIN_BYTES_PER_S:
        total = STALL_FLOOR_S + size / (share_bytes_per_s / 2)
    else:
        total = min(cap_s, STALL_FLOOR_S + size / MIN_BYTES_PER_S)
    return aiohttp.ClientTimeout(total=total, sock_connect=10, sock_read=120)


def new_run_id(now: datetime) -> str:
    return f"{now:%Y-%m-%dT%H-%M-%SZ}-{secrets.token_hex(2)}"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def make_session(settings: Settings) -> aiohttp.ClientSession:
    limit = settings.upload.concurrency + settings.upload.presign_concurrency + 4
    return aiohttp.ClientSession(
        # TLS verified always; api.ca_file adds a CA, never turns verification off.
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit,
                                       ssl=tls_context(settings.api.ca_file)),
        # PracSuite's answers are small; S3 bodies are streamed from disk.
        auto_decompress=True,
        # HTTPS_PROXY / HTTP_PROXY / NO_PROXY, for PracSuite and S3 alike (SPEC.md).
        trust_env=True,
    )


def make_client(settings: Settings, session: aiohttp.ClientSession) -> PracSuiteClient:
    return PracSuiteClient(
        session,
        settings.api.base_url,
        settings.api.vendor_api_key.get_secret_value(),
        settings.api.practice_api_key.get_secret_value(),
        RateGate.for_setting(settings.api.requests_per_second,
                             settings.api.max_requests_per_second, shared_limit_of(settings)),
        timeout_s=settings.api.timeout_s,
        list_key=settings.api.list_key,
        page_size=settings.api.page_size,
        max_wait_s=settings.api.max_wait_s,
    )


class Run:
    """One `run`: owns the run id, the limits and the per-client snapshots."""

    def __init__(self, settings: Settings, state: State, api: PracSuiteClient | None,
                 session: aiohttp.ClientSession | None, *, dry_run: bool,
                 shutdown: asyncio.Event, run_id: str, shard: Shard | None = None) -> None:
        self.settings = settings
        self.state = state
        self.api = api
        self.session = session
        self.dry_run = dry_run
        self.shutdown = shutdown
        self.run_id = run_id
        self.shard = shard  # rows of other shards are dropped as they are read
        self.row_filter = NO_FILTER  # run --client / --limit (filters.py)
        self.counters = Counters()
        self.rng = random.Random()
        self.log = get_logger(run_id=run_id)
        # files worked on (upload slots + a few presigned ahead), and the upload slots
        self.ahead = PresignAhead(settings.upload.concurrency,
                                  settings.upload.presign_concurrency)
        self._presign_slots = asyncio.Semaphore(settings.upload.presign_concurrency)
        self._snap_locks: dict[str, asyncio.Lock] = {}
        self._snap_refused: dict[str, str] = {}
        self._snapshotted: set[str] = set()
        self.uploads = UploadPhase()  # what reconcile, running alongside, sees of the uploads
        self._upload_cap_s = settings.upload.timeout_s
        cap = settings.upload.max_bytes_per_second
        self._bandwidth = BandwidthCap(cap) if cap else None  # one for every upload
        self._share = cap / settings.upload.concurrency  # each upload's share of the cap
        # Where links are not followed (a folder walked without following them), the
        # check opens without following one either; input.root binds the file opened.
        self._nofollow = bool(settings.input.source_dir) and not settings.input.follow_symlinks
        self._root = Path(settings.input.root) if settings.input.root else None

    # ---------------------------------------------------------------- the scan phase
    def rows(self) -> Iterator[Row]:
        manifest = self.settings.input.manifest
        source = self.settings.input.source_dir
        confine = self.settings.input.root
        rows = only_mine(read_rows(Path(manifest) if manifest else None,
                                   Path(source) if source else None,
                                   follow_symlinks=self.settings.input.follow_symlinks,
                                   root=Path(confine) if confine else None,
                                   encoding=self.settings.input.encoding), self.shard)
        return self.row_filter.apply(rows)

    async def upload_all(self) -> bool:
        """Send every row; False when a shutdown stopped the intake early.

        After a shutdown signal, uploads in flight get `upload.grace_s` to finish;
        then they are cancelled, leaving their stage as it was (an `uploading` item is
        reconciled by the next run before anything is sent again).
        """
        in_flight: set[asyncio.Task[None]] = set()
        async with asyncio.TaskGroup() as outer:
            watcher = outer.create_task(self._cancel_after_grace(in_flight))
            try:
                async with asyncio.TaskGroup() as tg:
                    for seq, row in enumerate(self.rows(), start=1):
                        self.counters.rows = seq
                        if not self.shutdown.is_set():
                            await self.ahead.rows.acquire()  # backpressure before the task
                            if not self.shutdown.is_set():
                                task = tg.create_task(self._one(seq, row))
                                in_flight.add(task)
                                task.add_done_callback(in_flight.discard)
                                continue
                            self.ahead.rows.release()
                        self._not_started(seq, row)
            finally:
                watcher.cancel()
        self._log_skipped()
        return not self.shutdown.is_set()

    def _log_skipped(self) -> None:
        """One INFO line for every skipped item of the scan, with a count per reason
        (a rerun of 100,000 done rows is one line, not 100,000; each is at DEBUG)."""
        why = self.counters.skipped_why
        if why:
            self.log.info("items skipped", stage="admit", count=sum(why.values()),
                          reasons=dict(sorted(why.items())))

    async def _cancel_after_grace(self, in_flight: set[asyncio.Task[None]]) -> None:
        await self.shutdown.wait()
        self.log.warning("stopping: no new files; waiting for uploads in flight",
                         in_flight=len(in_flight), grace_s=self.settings.upload.grace_s)
        await asyncio.sleep(self.settings.upload.grace_s)
        for task in list(in_flight):
            task.cancel()

    def record_unread(self) -> int:
        """After a stop at once: each row this run has no item for becomes `pending`.

        Reads the input again (rows only: no file is opened, nothing is sent) so that
        every row ends with exactly one status, as SPEC.md says of rows not yet read.
        Returns how many rows it recorded.
        """
        recorded = self.state.seqs(self.run_id)
        added = 0
        try:
            for seq, row in enumerate(self.rows(), start=1):
                if seq not in recorded:
                    self._not_started(seq, row)
                    added += 1
        except OSError as exc:  # the input went away meanwhile: say so, keep what is saved
            self.log.warning("could not read the input again to record unread rows",
                             error=exc.strerror or type(exc).__name__)
        if added:
            self.log.warning("stopped at once: rows not started recorded as pending",
                             count=added)
        return added

    def _not_started(self, seq: int, row: Row) -> None:
        self.state.add_item(self.run_id, seq, row, None, Stage.SEEN,
                            error=NOT_SENT)

    async def _one(self, seq: int, row: Row) -> None:
        try:
            bind_context(client_id=row.client_id, item=seq, stage="scan")  # this task only
            try:
                local: LocalFile | str = await check_local(
                    row, nofollow=self._nofollow, root=self._root)
            except asyncio.CancelledError:
                self._not_started(seq, row)  # stopped while checked: the row keeps its item
                raise
            except Exception as exc:  # a bug on one odd file must not stop the others
                local = (f"unexpected error while checking the file ({type(exc).__name__}); "
                         "please report it")
            log = self.log.bind(client_id=row.client_id, item=seq)
            if isinstance(local, str):
                self.state.add_item(self.run_id, seq, row, None, Stage.INVALID, error=local)
                self.counters.tally(Stage.INVALID)
                log.warning("item invalid", stage="scan", reason=local, path=row.path)
                return
            await self._admit_and_send(seq, local, log)
        finally:
            self.ahead.rows.release()

    async def _admit_and_send(self, seq: int, local: LocalFile, log: Any) -> None:
        row = local.row
        # No await between the look-up and the insert: admission is atomic on the loop.
        decision = admit(
            self.state.find_in_run(self.run_id, row.client_id, row.file_name, local.sha256),
            self.state.find_earlier(self.run_id, row.client_id, row.file_name, local.sha256),
        )
        earlier = decision.earlier
        if decision.action is Action.DUPLICATE and earlier is not None:
            self.state.add_item(self.run_id, seq, row, local, Stage.SKIPPED,
                                error=decision.reason, duplicate_of=earlier.id)
            self.counters.skipped(Stage.SKIPPED, "duplicate row")
            log.debug("item skipped", stage="admit", reason="duplicate row")
            return
        if decision.action is Action.SKIP and earlier is not None:
            self.state.add_item(self.run_id, seq, row, local, Stage.SKIPPED,
                                error=decision.reason, key=earlier.key,
                                attachment_id=earlier.attachment_id)
            self.counters.skipped(Stage.SKIPPED, "validated earlier")
            log.debug("item skipped", stage="admit", reason="validated earlier")
            return
        if self.dry_run:
            self.state.add_item(self.run_id, seq, row, local, Stage.SEEN,
                                error="dry run: would be reconciled" if earlier else None)
            self.counters.tally(Stage.SEEN)
            self.counters.bytes_to_send += local.size if earlier is None else 0
            return
        if decision.action is Action.RECONCILE and earlier is not None:
            lost = earlier.stage is Stage.UPLOADING or earlier.outcome_unknown
            stage = Stage.UPLOADING if lost else Stage.UPLOADED
            self.state.add_item(self.run_id, seq, row, local, stage, key=earlier.key,
                                snapshot_run=earlier.snapshot_run or earlier.run_id,
                                outcome_unknown=lost,
                                uploaded_at=earlier.uploaded_at)
            self.counters.tally(stage)
            log.info("item carried to reconcile", stage="admit", from_run=earlier.run_id)
            return
        item_id = self.state.add_item(self.run_id, seq, row, local, Stage.SEEN,
                                      snapshot_run=self.run_id)
        self.counters.bytes_to_send += local.size
        with self.uploads.activity.sending(row.client_id):
            await self._send(item_id, local, log)

    # ------------------------------------------------------- presign and upload phase
    async def _snapshot(self, client_id: str) -> None:
        """Before the first upload for a client, remember the records it already has."""
        if client_id in self._snapshotted:  # every later file of the client: no I/O at all
            return
        lock = self._snap_locks.setdefault(client_id, asyncio.Lock())
        async with lock:
            bind_context(stage="snapshot")
            if client_id in self._snap_refused:
                raise Permanent(self._snap_refused[client_id])
            if self.state.has_snapshot(self.run_id, client_id):
                self._snapshotted.add(client_id)
                return
            assert self.api is not None
            api = self.api
            try:
                records = await rc.list_records(api, client_id, PolicyRetrier(
                    self.settings.api.max_attempts, self.rng, self._on_retry))
            except Permanent as exc:
                self._snap_refused[client_id] = str(exc)
                raise
            self.state.save_snapshot(self.run_id, client_id, (r.record_id for r in records))
            self._snapshotted.add(client_id)

    def _on_retry(self, exc: BaseException, attempt: int, delay: float) -> None:
        self.counters.retries += 1
        self.log.warning("retrying", error=str(exc), attempt=attempt, delay_s=round(delay, 2))

    async def _presign(self, local: LocalFile) -> Presigned:
        assert self.api is not None
        api = self.api
        bind_context(stage="presign")
        self.counters.presigning += 1
        try:
            async with self._presign_slots:
                return await retrying(
                    lambda: api.presign(local.row.client_id, local.row.file_name),
                    max_attempts=self.settings.api.max_attempts, rng=self.rng,
                    on_retry=self._on_retry)
        finally:
            self.counters.presigning -= 1

    async def _send(self, item_id: int, local: LocalFile, log: Any, attempts: int = 0) -> None:
        """Snapshot the client, presign, wait presigned for an upload slot, upload.

        The presign is made before the slot is taken (`presign_ahead`); a run stopping
        meanwhile leaves the file presigned and unsent (`pending`: the next run sends it).
        """
        try:
            await self._snapshot(local.row.client_id)
            presigned = await self._presign(local)
            # This run's snapshot was taken before this upload: it is what the
            # record must not be part of.
            self.state.set_stage(item_id, Stage.PRESIGNED, key=presigned.key,
                                 snapshot_run=self.run_id)
            async with self.ahead.upload_slot():
                if self.shutdown.is_set():
                    self.state.set_stage(item_id, Stage.PRESIGNED, error=NOT_SENT)
                    log.debug("item not sent: stopping", stage="upload")
                    return
                attempts = await self._upload(item_id, local, presigned, log, attempts)
            now = time.time()
            self.state.set_stage(item_id, Stage.UPLOADED, uploaded_at=now, error=None,
                                 outcome_unknown=False)
            self.counters.bytes_sent += local.size
            self.counters.tally(Stage.UPLOADED)
            log.debug("item uploaded", stage="upload", attempts=attempts,
                      file_name=local.row.file_name)
        except SourceChanged as exc:
            # S3 holds nothing of it: the report shows no size or hash it does not hold.
            self.state.set_stage(item_id, Stage.FAILED, error=str(exc), size=None, sha256=None)
            self.counters.tally(Stage.FAILED)
            log.warning("item failed", stage="upload", error=str(exc),
                        file_name=local.row.file_name)
        except OutcomeUnknown as exc:
            self.state.set_stage(item_id, Stage.UPLOADING, outcome_unknown=True,
                                 error=f"{exc}; reconciling before any re-send")
            self.counters.tally(Stage.UPLOADING)
            log.warning("upload outcome unknown", stage="upload", error=str(exc))
        except (Permanent, Retryable) as exc:
            self.state.set_stage(item_id, Stage.FAILED, error=str(exc))
            self.counters.tally(Stage.FAILED)
            log.warning("item failed", stage="upload", error=str(exc),
                        file_name=local.row.file_name)
        except asyncio.CancelledError:
            current = self.state.item(item_id)
            if current is not None and current.stage is Stage.PRESIGNED:  # never sent
                self.state.set_stage(item_id, Stage.PRESIGNED, error=NOT_SENT)
            raise
        except Fatal:
            raise
        except Exception as exc:  # a bug in one file's path must not stop the others
            self._record_unexpected(item_id, exc, log)

    async def _upload(self, item_id: int, local: LocalFile, presigned: Presigned | None,
                      log: Any, attempts: int) -> int:
        """Upload in the slot held, presigning again (`presigned` None: first) on an
        expired policy; returns the attempts made so far."""
        for presign_round in range(1, MAX_PRESIGN_ROUNDS + 1):
            if presigned is None:
                presigned = await self._presign(local)
                self.state.set_stage(item_id, Stage.PRESIGNED, key=presigned.key,
                                     snapshot_run=self.run_id)

            async def once(p: Presigned = presigned) -> None:
                nonlocal attempts
                attempts += 1
                bind_context(stage="upload", attempt=attempts)
                self.state.set_stage(item_id, Stage.UPLOADING, attempts=attempts)
                assert self.session is not None
                self.counters.in_flight += 1
                try:
                    await upload_file(self.session, p, local, local.row.file_name,
                                      timeout=upload_timeout(
                                          local.size, self._upload_cap_s, self._share),
                                      cap=self._bandwidth, root=self._root)
                finally:
                    self.counters.in_flight -= 1

            try:
                await retrying(once, max_attempts=self.settings.api.max_attempts,
                               rng=self.rng, on_retry=self._on_retry)
            except PolicyExpired:
                if presign_round == MAX_PRESIGN_ROUNDS:
                    raise Permanent(
                        "the presigned POST expired before the upload finished, "
                        f"{MAX_PRESIGN_ROUNDS} times (S3 said so); check the network "
                        "speed, or lower upload.concurrency") from None
                log.warning("presigned POST expired; presigning again", stage="upload")
                presigned = None
            else:
                return attempts
        raise AssertionError("unreachable: the last round returns or raises")

    def _record_unexpected(self, item_id: int, exc: Exception, log: Any) -> None:
        what = f"unexpected error ({type(exc).__name__}); please report it"
        current = self.state.item(item_id)
        if current is not None and current.stage is Stage.UPLOADING:
            # The body may have gone out: reconcile before anything is sent again.
            self.state.set_stage(item_id, Stage.UPLOADING, outcome_unknown=True,
                                 error=f"{what}; reconciling before any re-send")
        elif current is not None and current.stage in (Stage.SEEN, Stage.PRESIGNED):
            self.state.set_stage(item_id, Stage.FAILED, error=what)
            self.counters.tally(Stage.FAILED)
        log.error("unexpected error", stage="upload", error_type=type(exc).__name__)

    # ------------------------------------------------------------ reconcile phase
    async def execute(self) -> None:
        """Upload every row, reconcile; send again what was lost and has no record.

        An upload whose S3 answer was lost is sent again only after a reconcile
        pass found no record for it by the deadline (SPEC.md guarantees).
        """
        if self.api is not None:
            self.counters.pace = self.api.gate.pace
        try:
            await self._upload_and_reconcile()
        finally:
            if self.api is not None:
                self.log.info("api pace", **self.api.gate.pace().as_dict())

    async def _upload_and_reconcile(self) -> None:
        """Reconcile runs from the first upload on (confirming while uploading); its
        deadline counts from the moment the last upload finished. A lost upload is sent
        again only after that round's deadline poll found no record of it."""
        async with asyncio.TaskGroup() as tg:
            first_round = tg.create_task(self._reconcile(self.uploads))
            try:
                finished = await self.upload_all()
            finally:
                self.state.mark_last_upload(self.run_id, time.time())
                self.uploads.finish()
        if not finished:
            return
        absent = first_round.result()
        for resend_round in range(MAX_RESEND_ROUNDS + 1):
            if resend_round:
                absent = await self._reconcile(None)
            lost = [i for i in self.state.lost_uploads(self.run_id) if i.id in absent]
            if self.shutdown.is_set() or not lost or resend_round == MAX_RESEND_ROUNDS:
                return
            self.log.warning("sending again uploads whose answer was lost and that have "
                             "no record", count=len(lost), round=resend_round + 1)
            await self._resend(lost)

    async def _reconcile(self, uploads: UploadPhase | None) -> set[int]:
        return await reconcile_run(self.state, self.api, self.settings, self.run_id,
                                   self.settings.reconcile.deadline_s, self.shutdown,
                                   self.log, self.counters, uploads)

    async def _resend(self, items: list[ItemRecord]) -> None:
        async with asyncio.TaskGroup() as tg:
            for item in items:
                if self.shutdown.is_set():
                    return
                await self.ahead.rows.acquire()
                tg.create_task(self._resend_one(item))

    async def _resend_one(self, item: ItemRecord) -> None:
        try:
            row = Row(item.line, item.client_id, item.path, item.file_name, item.extra)
            local = LocalFile(row, Path(item.path), item.size or 0, item.sha256 or "")
            log = self.log.bind(client_id=item.client_id, item=item.seq)
            bind_context(client_id=item.client_id, item=item.seq)  # this task only
            with self.uploads.activity.sending(item.client_id):
                await self._send(item.id, local, log, attempts=item.attempts)
        finally:
            self.ahead.rows.release()
