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

from pracsuite_ingest.admission import Action, admit
from pracsuite_ingest.allocator import keep_big_blocks_mapped
from pracsuite_ingest.api import PracSuiteClient
from pracsuite_ingest.bandwidth import BandwidthCap
from pracsuite_ingest.counters import Counters
from pracsuite_ingest.errors import (
    Fatal,
    OutcomeUnknown,
    Permanent,
    PolicyExpired,
    QuotaSpent,
    Retryable,
    SourceChanged,
)
from pracsuite_ingest.filters import NO_FILTER
from pracsuite_ingest.formbody import CHUNK_BYTES as KEEP_BYTES
from pracsuite_ingest.local_check import check_local, close_kept
from pracsuite_ingest.localfs import disk_identity
from pracsuite_ingest.logs import bind_context, get_logger
from pracsuite_ingest.models import LocalFile, Presigned, Row, Stage
from pracsuite_ingest.presign_ahead import PresignAhead
from pracsuite_ingest.reconcile.reconciler import UploadPhase, reconcile_run
from pracsuite_ingest.retry import retrying
from pracsuite_ingest.run_events import RunEvents
from pracsuite_ingest.scan import read_rows
from pracsuite_ingest.settings import Settings
from pracsuite_ingest.shard import Shard, only_mine
from pracsuite_ingest.snapshots import Snapshots
from pracsuite_ingest.state import ItemRecord, State
from pracsuite_ingest.upload import upload_file, upload_timeout

MAX_PRESIGN_ROUNDS = 8  # a policy that S3 keeps calling expired: a slow link
# Rounds of sending again, within a run, uploads that PracSuite shows no record of by a
# deadline (lost answers, and uploads of earlier runs); each file's sends over every run
# are bounded by reconcile.max_resends (the verdict's), this bounds the rounds.
MAX_RESEND_ROUNDS = 4

def new_run_id(now: datetime) -> str:
    return f"{now:%Y-%m-%dT%H-%M-%SZ}-{secrets.token_hex(2)}"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
        self.events = RunEvents(state, run_id, Counters())  # stage, counter, log: together
        self.rng = random.Random()
        self.log = get_logger(run_id=run_id)
        # files worked on (upload slots + a few presigned ahead), and the upload slots
        self.ahead = PresignAhead(settings.upload.concurrency,
                                  settings.upload.presign_concurrency)
        self._presign_slots = asyncio.Semaphore(settings.upload.presign_concurrency)
        self.snapshots = Snapshots(state, self.run_id, settings.api.max_attempts, self.rng,
                                   self._on_retry)
        self.uploads = UploadPhase()  # what reconcile, running alongside, sees of the uploads
        self.stopped_by: QuotaSpent | None = None  # PracSuite's quota answer that stopped it
        self._upload_cap_s = settings.upload.timeout_s
        cap = settings.upload.max_bytes_per_second
        self._bandwidth = BandwidthCap(cap) if cap else None  # one for every upload
        self._share = cap / settings.upload.concurrency  # each upload's share of the cap
        # Where links are not followed (a folder walked without following them), the
        # check opens without following one either; input.root binds the file opened.
        self._nofollow = bool(settings.input.source_dir) and not settings.input.follow_symlinks
        self._root = Path(settings.input.root) if settings.input.root else None

    @property
    def counters(self) -> Counters:
        return self.events.counters

    @counters.setter
    def counters(self, counters: Counters) -> None:  # a Watch hands in its own
        self.events.counters = counters

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
                        self.events.not_started(seq, row)
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
        every row ends with exactly one status, as docs/contract.md says of rows not yet read.
        Returns how many rows it recorded.
        """
        recorded = self.state.seqs(self.run_id)
        added = 0
        try:
            for seq, row in enumerate(self.rows(), start=1):
                if seq not in recorded:
                    self.events.not_started(seq, row)
                    added += 1
        except OSError as exc:  # the input went away meanwhile: say so, keep what is saved
            self.log.warning("could not read the input again to record unread rows",
                             error=exc.strerror or type(exc).__name__)
        if added:
            self.log.warning("stopped at once: rows not started recorded as pending",
                             count=added)
        return added

    async def _one(self, seq: int, row: Row) -> None:
        local: LocalFile | str | None = None
        try:
            bind_context(client_id=row.client_id, item=seq, stage="scan")  # this task only
            prior: ItemRecord | None = None  # this row's earlier validated upload
            try:
                prior = self._prior_upload(row)
                identity = await self._identity(row, prior)
                if identity is not None and self._skip_unchanged(seq, row, prior, identity):
                    return
                # A small file stays open with its bytes from the check to its upload:
                # one thread hand-off a file instead of two (closed below).
                local = await check_local(
                    row, nofollow=self._nofollow, root=self._root,
                    empty_files=self.settings.upload.empty_files,
                    keep_bytes=0 if self.dry_run else KEEP_BYTES)
            except asyncio.CancelledError:
                self.events.not_started(seq, row)  # stopped while checked: the row keeps its item
                raise
            except Fatal:  # the state file cannot be written: the run stops
                raise
            except Exception as exc:  # a bug on one odd file must not stop the others
                local = (f"unexpected error while checking the file ({type(exc).__name__}); "
                         "please report it")
            log = self.log.bind(client_id=row.client_id, item=seq)
            if isinstance(local, str):
                self.events.invalid(seq, row, local, log)
                return
            await self._admit_and_send(seq, local, log, identity or local.disk_identity,
                                       prior)
        finally:
            close_kept(local)
            self.ahead.rows.release()

    def _prior_upload(self, row: Row) -> ItemRecord | None:
        """The latest validated upload of this very row by an earlier run (None for a
        row that the check refuses anyway)."""
        if row.problem or not row.client_id:
            return None
        return self.state.row_upload(self.run_id, row)

    async def _identity(self, row: Row, prior: ItemRecord | None) -> str | None:
        """The file's identity on disk, from a `stat` in a worker thread (the file is
        not opened), where a rerun may skip it unread: an earlier run validated this
        row's upload. Else None: the check takes it, from the descriptor it hashes."""
        if prior is None or self.settings.input.rehash:
            return None
        return await asyncio.to_thread(disk_identity, Path(row.path), nofollow=self._nofollow)

    def _skip_unchanged(self, seq: int, row: Row, earlier: ItemRecord | None,
                        identity: str) -> bool:
        """Whether the row's file is as it was when an earlier run's upload of it was
        validated (docs/contract.md, "A rerun costs only what changed"): then it is
        skipped without being read. Taken before the check hashes the file, the
        identity recorded is never newer than the bytes hashed."""
        if earlier is None or earlier.disk_identity != identity:
            return False
        self.events.unchanged(seq, row, earlier, identity,
                              self.log.bind(client_id=row.client_id, item=seq))
        return True

    async def _admit_and_send(self, seq: int, local: LocalFile, log: Any,
                              identity: str | None = None,
                              prior: ItemRecord | None = None) -> None:
        row = local.row
        # No await between the look-up and the insert: admission is atomic on the loop.
        same = self.state.find_in_run(self.run_id, row.client_id, row.file_name, local.sha256)
        earlier = self.state.find_earlier(self.run_id, row.client_id, row.file_name,
                                          local.sha256)
        sends = (self.state.sends_of(row.client_id, row.file_name, local.sha256)
                 if same is None and earlier is not None else 0)
        decision = admit(same, earlier, sends, self.settings.reconcile.max_resends)
        earlier = decision.earlier
        if decision.action is Action.DUPLICATE and earlier is not None:
            self.events.duplicate(seq, local, decision, earlier, log)
        elif decision.action is Action.SKIP and earlier is not None:
            self.events.validated_earlier(seq, local, decision, earlier, log, identity)
        elif decision.action is Action.GIVE_UP and earlier is not None:
            self.events.given_up(seq, local, decision, earlier, log)
        elif self.dry_run:
            self.events.planned(seq, local, earlier)
        elif decision.action is Action.RECONCILE and earlier is not None:
            self.events.carried(seq, local, earlier, log)
        else:
            replaces = (prior.attachment_id if prior is not None
                        and prior.sha256 != local.sha256 else None)
            item_id = self.events.admitted(seq, local, identity, replaces)
            with self.uploads.activity.sending(row.client_id):
                await self._send(item_id, local, log)

    # ------------------------------------------------------- presign and upload phase
    def stop_for_quota(self, exc: QuotaSpent) -> None:
        """PracSuite takes no more calls for now: stop as a SIGTERM stops the run (no new
        work; uploads in flight finish or are recorded; unconfirmed ones stay pending)."""
        if self.stopped_by is None:
            self.stopped_by = exc
            self.log.error("stopping: PracSuite's quota is spent", error=str(exc))
        self.shutdown.set()

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
            assert self.api is not None
            await self.snapshots.take(self.api, local.row.client_id)
            presigned = await self._presign(local)
            self.events.presigned(item_id, presigned.key)
            async with self.ahead.upload_slot():
                if self.shutdown.is_set():
                    self.events.not_sent(item_id, log)
                    return
                attempts = await self._upload(item_id, local, presigned, log, attempts)
            self.events.uploaded(item_id, local, time.time(), attempts, log)
        except SourceChanged as exc:  # S3 holds nothing of it
            self.events.failed(item_id, str(exc), local, log, nothing_stored=True)
        except OutcomeUnknown as exc:
            self.events.lost(item_id, str(exc), log)
        except (Permanent, Retryable) as exc:
            self.events.failed(item_id, str(exc), local, log)
        except QuotaSpent as exc:  # not this file's fault: it stays pending
            self.stop_for_quota(exc)
            self.events.cancelled(item_id)
        except asyncio.CancelledError:
            self.events.cancelled(item_id)
            raise
        except Fatal:
            raise
        except Exception as exc:  # a bug in one file's path must not stop the others
            self.events.unexpected(item_id, exc, log)

    async def _upload(self, item_id: int, local: LocalFile, presigned: Presigned | None,
                      log: Any, attempts: int) -> int:
        """Upload in the slot held, presigning again (`presigned` None: first) on an
        expired policy; returns the attempts made so far."""
        keys_sent: set[str] = set()  # a send counts once per presigned key
        for presign_round in range(1, MAX_PRESIGN_ROUNDS + 1):
            if presigned is None:
                presigned = await self._presign(local)
                self.events.presigned(item_id, presigned.key)

            async def once(p: Presigned = presigned) -> None:
                nonlocal attempts
                attempts += 1
                bind_context(stage="upload", attempt=attempts)
                new_key = p.key not in keys_sent
                self.events.sending(item_id, attempts, new_key=new_key)
                keys_sent.add(p.key)
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

    # ------------------------------------------------------------ reconcile phase
    async def execute(self) -> None:
        """Upload every row, reconcile; send again what was lost and has no record.

        An upload whose S3 answer was lost is sent again only after a reconcile
        pass found no record for it by the deadline (docs/contract.md, "Guarantees").
        A spent quota (`QuotaSpent`) stops it as a SIGTERM does, then is raised.
        """
        if self.api is not None:
            self.counters.pace = self.api.gate.pace
        self.events.commits.start()  # a run that only reconciles commits its claims too
        # A big poll's freed containers go back to the system, not held as heap holes
        # that raise the peak (allocator.py: 30,000 files of one patient, 87 -> 82 MB).
        keep_big_blocks_mapped()
        try:
            await self._upload_and_reconcile()
        finally:
            self.events.close()  # what the group commit still holds
            if self.api is not None:
                self.log.info("api pace", **self.api.gate.pace().as_dict())
        if self.stopped_by is not None:  # stopped as on SIGTERM; the run ends with exit 3
            raise self.stopped_by

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
            lost = [i for i in map(self.state.item, sorted(absent))
                    if i is not None and i.stage is Stage.MISSING]
            if self.shutdown.is_set() or not lost or resend_round == MAX_RESEND_ROUNDS:
                return
            self.log.warning("sending again uploads that PracSuite shows no record of",
                             count=len(lost), round=resend_round + 1)
            await self._resend(lost)

    async def _reconcile(self, uploads: UploadPhase | None) -> set[int]:
        return await reconcile_run(self.state, self.api, self.settings, self.run_id,
                                   self.settings.reconcile.deadline_s, self.shutdown,
                                   self.log, self.counters, uploads,
                                   on_quota=self.stop_for_quota)

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
