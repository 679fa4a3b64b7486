"""The reconcile polling loop (I/O): ask PracSuite until every upload has its record.

The matching itself is pure and lives in `reconcile.py`, when to poll which patient in
`scheduling.py`; this loop owns the deadline, runs a few patients' polls at a time
(`POLLS_IN_FLIGHT`, the rate gate pacing every call), the downloads that let the bytes
decide (`verification.py`), and the one decision that lets a lost upload be sent
again. It runs alongside the uploads (`UploadPhase`): a patient's uploads are
confirmed while later patients' are still being sent; the deadline starts when the
last upload of the run finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pracsuite_ingest import MAX_FILE_BYTES
from pracsuite_ingest import reconcile as rc
from pracsuite_ingest.api import PracSuiteClient, RecordRef
from pracsuite_ingest.counters import Counters
from pracsuite_ingest.errors import Permanent, Retryable
from pracsuite_ingest.models import Stage
from pracsuite_ingest.retry import PolicyRetrier
from pracsuite_ingest.scheduling import Activity, Schedule
from pracsuite_ingest.settings import Settings
from pracsuite_ingest.state import ItemRecord, State
from pracsuite_ingest.verification import Verifier, VerifyFailed

POLLS_IN_FLIGHT = 4  # patients polled at once; the rate gate still paces every call
IDLE_TICK_S = 1.0  # the longest the loop sleeps before it looks at shutdown and state again
LAST_LOOK_S = 5.0  # the last poll of a patient still waiting, at most this before the deadline
REFRESH_S = 0.25  # uploads ending read from the state at most this often (one query each)


@dataclass
class UploadPhase:
    """The upload phase as reconcile sees it while both run: which patients have an
    upload in flight (`activity`), and whether the last upload has finished."""

    activity: Activity = field(default_factory=Activity)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dirty: bool = True  # an upload ended since the loop last read the waiting uploads

    def __post_init__(self) -> None:
        self.activity.on_change = self.changed

    def changed(self) -> None:
        self.dirty = True
        self.wake.set()

    def finish(self) -> None:
        self.finished.set()
        self.changed()


def _upload_of(item: ItemRecord, before: frozenset[str]) -> rc.Upload:
    return rc.Upload(item.id, item.client_id, item.file_name, item.size, item.key or "",
                     before, item.sha256)


def ambiguous_error(records: list[str]) -> str:
    """Why an upload was left unclaimed with verification off, and what would decide."""
    ids = ", ".join(records)
    return (f"{len(records)} new PracSuite records share this file's name and size "
            f"(attachment ids {ids}) and name and size cannot tell which is this upload's; "
            "reconcile.verify = \"off\" reads no bytes, so none was claimed: set "
            "reconcile.verify = \"ambiguous\" and run `pracsuite-ingest reconcile` to let "
            "the bytes decide")


def differ_note(records: set[str]) -> str:
    ids = ", ".join(sorted(records, key=rc._sort_key))
    return (f"; {len(records)} new record(s) with the same name and size hold other bytes "
            f"(attachment ids {ids}): someone else's, not claimed")


async def reconcile_run(state: State, api: PracSuiteClient | None, settings: Settings,
                        run_id: str, deadline_s: float, shutdown: asyncio.Event,
                        log: Any, counters: Counters | None = None,
                        uploads: UploadPhase | None = None) -> set[int]:
    """Poll until every awaiting upload of the run has a record, or the deadline passes.

    With `uploads` (a run's first round), it runs while the uploads go on: it polls
    each patient once no upload of it is in flight and its records are likely there,
    and the deadline counts from `uploads.finished`; without, from now.

    Returns the ids of uploads whose S3 answer was lost and that PracSuite is *known*
    not to hold: a complete poll of their client after the deadline found no record.
    Only those may be sent again (docs/contract.md, "Guarantees"); a lost upload whose client
    could not be asked stays unknown, and the next run asks again before sending.
    """
    assert api is not None
    c = counters or Counters()
    c.reconcile_end = ""
    if uploads is None:
        uploads = UploadPhase()
        uploads.finish()
    try:
        absent = await _reconcile(state, api, settings, run_id, deadline_s, shutdown, log, c,
                                  uploads)
        # The display's last frame shows the outcome: what is still without a record.
        c.awaiting = len(state.awaiting(run_id))
    except BaseException:
        c.reconcile_end = "stopped"
        raise
    c.reconcile_end = "stopped" if shutdown.is_set() else "done"
    return absent


async def _reconcile(state: State, api: PracSuiteClient, settings: Settings, run_id: str,
                     deadline_s: float, shutdown: asyncio.Event, log: Any,
                     c: Counters, uploads: UploadPhase) -> set[int]:

    def on_retry(exc: BaseException, attempt: int, delay: float) -> None:
        c.retries += 1
        log.warning("retrying", stage="reconcile", error=str(exc), attempt=attempt,
                    delay_s=round(delay, 2))

    names: dict[str, str] = {}
    answers: dict[str, rc.PresignAnswer] = {}  # presign_url answers: names and GET URLs
    digests: dict[str, rc.Digest] = {}  # records whose bytes were read
    ambiguous: dict[int, list[str]] = {}  # verify off: candidates left unclaimed
    differ: dict[int, set[str]] = {}  # records whose bytes are not the upload's
    verify = settings.reconcile.verify
    verifier = Verifier(api.session, settings.reconcile.verify_concurrency)
    call = PolicyRetrier(settings.api.max_attempts, random.Random(), on_retry)
    snapshots: dict[tuple[str, str], frozenset[str]] = {}  # a snapshot, once taken, is fixed

    def before(item: ItemRecord) -> frozenset[str]:
        """The snapshot taken before this item's upload: its own run's, or for an upload
        carried from an earlier run, the run that sent it (never this run's)."""
        at = (item.snapshot_run or run_id, item.client_id)
        if at not in snapshots:
            taken = state.snapshot(*at)
            if taken is None:  # not reachable: a run snapshots a client before presigning
                return frozenset()
            snapshots[at] = frozenset(taken)
        return snapshots[at]

    async def read_bytes(client_id: str, uploads: list[rc.Upload],
                         evidence: rc.Evidence, links: dict[str, str]) -> None:
        """Download what the bytes must decide; each digest is kept as it comes, so a
        poll cut by its time limit loses none of those already read."""
        decision = rc.decide(uploads, evidence, verify, digests)
        if not decision.download:
            return

        async def read_answer(rid: str) -> rc.PresignAnswer:
            data = await call(partial(api.record_presign, RecordRef(rid, links.get(rid, ""))))
            return rc.presign_answer(data, time.monotonic())

        def failed(rid: str, reason: str) -> None:
            log.warning("record bytes not read; the next poll tries again",
                        stage="verify", client_id=client_id, attachment_id=rid, error=reason)

        limit = max((u.size for u in uploads if u.size is not None), default=MAX_FILE_BYTES)
        await verifier.digest_records(decision.download, answers, read_answer, limit,
                                      digests, failed)
        log.debug("record bytes read", stage="verify", client_id=client_id,
                  records=len(decision.download), downloads_total=verifier.downloads,
                  bytes_total=verifier.bytes_read)

    activity = uploads.activity

    async def poll(client_id: str, items: list[ItemRecord], limit_s: float,
                   generation: int | None = None) -> tuple[bool, int]:
        """One look at the client's records: whether it was complete (False if
        PracSuite could not be asked, or not fully), and how many uploads it validated.

        Only uploads that finished are asked about (`items`: stage uploaded, missing, or
        outcome unknown). When an upload of the client started during the poll, its
        record may be in the list without its item among `items`: then only claims
        that a key or the bytes prove are kept; name and size alone wait for the next.
        `generation`: the patient's uploads started when it was chosen (default: now).
        """
        if generation is None:
            generation = activity.started(client_id)
        claims = state.claims(client_id)
        uploads = [_upload_of(i, before(i)) for i in items]
        # Another row of the same upload (same key) claimed its record: that is proof.
        found: dict[int, tuple[str, bool]] = {
            i: (r, False) for i, r in rc.proven_by_own_key(uploads, claims).items()}
        waiting = [u for u in uploads if u.item_id not in found]
        evidence: rc.Evidence | None = None
        complete = True
        wanted = {rc.nfc(u.file_name) for u in waiting} if verify != "off" else set()
        limit = max((u.size for u in waiting if u.size is not None), default=MAX_FILE_BYTES)
        links: dict[str, str] = {}

        async def read_early(rid: str, answer: rc.PresignAnswer) -> None:
            """A record whose name is an upload's: its bytes now, while the URL is fresh."""
            if rid not in digests and rc.nfc(answer.file_name) in wanted:
                with contextlib.suppress(VerifyFailed):
                    digests[rid] = await verifier.digest_bounded(answer.url, limit)

        try:
            if waiting:
                async with asyncio.timeout(limit_s):
                    evidence = await rc.match_client(api, client_id, waiting, claims.keys(),
                                                     names, call, answers, read_early, links)
                    await read_bytes(client_id, waiting, evidence, links)
        except (Permanent, Retryable, TimeoutError) as exc:
            log.warning("reconcile poll failed", stage="reconcile", client_id=client_id,
                        error=str(exc) or type(exc).__name__)
            if evidence is None:
                return False, 0
            complete = False  # the list was read: claim what the bytes read so far prove
        if evidence is not None:
            decision = rc.decide(waiting, evidence, verify, digests)
            claimed = decision.claims
            if activity.started(client_id) != generation:
                claimed = {i: (r, v) for i, (r, v) in claimed.items()
                           if v or evidence.proven.get(i) == r}
                complete = complete and len(claimed) == len(decision.claims)
            found |= claimed
            for item in items:
                if item.id in decision.ambiguous:
                    ambiguous[item.id] = decision.ambiguous[item.id]
                else:
                    ambiguous.pop(item.id, None)
                if item.id in decision.differ:
                    differ.setdefault(item.id, set()).update(decision.differ[item.id])
        by_id = {i.id: i for i in items}
        for item_id, (record, verified) in found.items():
            state.set_stage(item_id, Stage.VALIDATED, attachment_id=record, error=None,
                            verified=True if verified else None)
            c.tally(Stage.VALIDATED)
            c.awaiting -= 1
            log.info("item validated", stage="reconcile", client_id=client_id,
                     item=by_id[item_id].seq, attachment_id=record, verified=verified,
                     file_name=by_id[item_id].file_name)
        state.commit()  # one commit per poll, not per record
        return complete, len(found)

    def by_client(items: list[ItemRecord]) -> dict[str, list[ItemRecord]]:
        out: dict[str, list[ItemRecord]] = {}
        for item in items:
            out.setdefault(item.client_id, []).append(item)
        return out

    schedule = Schedule(settings.reconcile.poll_interval_s)
    slots = asyncio.Semaphore(POLLS_IN_FLIGHT)
    polling: set[str] = set()
    retry_bound_s = settings.api.timeout_s * settings.api.max_attempts + 60.0
    deadline: float | None = None  # monotonic; set when the last upload has finished
    last_look: float | None = None  # wall clock: every waiting patient is polled after it
    started = time.monotonic()

    async def poll_patient(client_id: str, generation: int) -> None:
        try:
            items = state.awaiting(run_id, client_id)
            if not items:
                schedule.done(client_id)
                return
            latest = max((i.uploaded_at for i in items if i.uploaded_at is not None),
                         default=None)
            if latest is not None and latest > schedule.since(client_id):
                schedule.waiting(client_id, latest)  # an upload ended since the last read
                return
            at = time.time()
            # Each call is retried on its own; after the uploads, a poll stops at the
            # deadline (with a few seconds' grace so that a late poll can still finish).
            limit = (retry_bound_s if deadline is None
                     else max(deadline - time.monotonic(), 5.0))
            complete, found = await poll(client_id, items, limit, generation)
            schedule.polled(client_id, at, found_all=complete and found == len(items),
                            found_none=complete and found == 0)
        finally:
            polling.discard(client_id)
            slots.release()
            uploads.wake.set()

    def refresh() -> None:
        """Read which patients wait, and since when (once per upload ended, not per poll:
        a poll's findings reach the schedule through `polled`)."""
        uploads.dirty = False
        waiting, count = state.awaiting_since(run_id)
        for client_id, since in waiting.items():
            schedule.waiting(client_id, since)
        for client_id in [k for k in schedule.clients() if k not in waiting]:
            if client_id not in polling:
                schedule.done(client_id)
        c.awaiting = count

    refreshed_at = -REFRESH_S
    async with asyncio.TaskGroup() as tg:
        while not shutdown.is_set():
            uploads.wake.clear()
            if deadline is None and uploads.finished.is_set():
                started = time.monotonic()
                deadline = started + deadline_s
                c.reconcile_until = time.time() + deadline_s
                last_look = c.reconcile_until - min(settings.reconcile.poll_interval_s,
                                                    LAST_LOOK_S, deadline_s / 2)
            if uploads.dirty and (deadline is not None
                                  or time.monotonic() - refreshed_at >= REFRESH_S):
                refresh()
                refreshed_at = time.monotonic()
            if deadline is not None and not polling and (
                    not schedule or time.monotonic() >= deadline):
                refresh()  # what the polls left, read once more before giving up
                if not schedule or time.monotonic() >= deadline:
                    break
            eligible = {k for k in schedule.clients()
                        if k not in polling and not activity.busy(k)}
            due = schedule.next_due(eligible, last_look)
            now = time.time()
            if due is not None and due.at <= now and (
                    deadline is None or time.monotonic() < deadline):
                # Chosen while none of its uploads is in flight: one that starts before
                # the poll's first step changes this count, as one started during it.
                generation = activity.started(due.client_id)
                await slots.acquire()  # the slot before the task: a few patients at a time
                polling.add(due.client_id)
                tg.create_task(poll_patient(due.client_id, generation))
                continue
            wait = IDLE_TICK_S if due is None else min(IDLE_TICK_S, max(due.at - now, 0.0))
            if deadline is not None and time.monotonic() < deadline:
                wait = min(wait, deadline - time.monotonic())
            elif deadline is not None:
                wait = IDLE_TICK_S  # past it: only the polls in flight are awaited
            if uploads.dirty and deadline is None:
                wait = min(wait, max(refreshed_at + REFRESH_S - time.monotonic(), 0.0))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await uploads.wake.wait()
    log.debug("reconcile schedule", stage="reconcile",
              estimate_s=round(schedule.estimate, 2), early=schedule.early,
              on_time=schedule.on_time)
    if shutdown.is_set():
        return set()
    # The deadline passed. Before anything lost is declared absent, look once more,
    # completely, at each client that has one (bounded by the retry policy only).
    lost = [i for i in state.awaiting(run_id) if i.outcome_unknown or i.stage is Stage.UPLOADING]
    asked: set[str] = set()
    for client_id, items in by_client(lost).items():
        limit = settings.api.timeout_s * settings.api.max_attempts + 60.0
        complete, _ = await poll(client_id, items, limit)
        if complete:
            asked.add(client_id)
    waited = time.monotonic() - started
    absent: set[int] = set()
    for item in state.awaiting(run_id):
        note = differ_note(differ[item.id]) if item.id in differ else ""
        if item.id in ambiguous:
            # Its record may be among the candidates: never sent again on a guess.
            state.set_stage(item.id, Stage.MISSING, error=ambiguous_error(ambiguous[item.id]))
            continue
        if item.outcome_unknown or item.stage is Stage.UPLOADING:
            if item.client_id in asked:
                error = (f"S3's answer to the upload was lost and no PracSuite record "
                         f"appeared within {waited:.0f}s; sending it again")
                absent.add(item.id)
            else:
                error = ("S3's answer to the upload was lost and PracSuite could not be "
                         "asked whether it holds a record; the next run asks again "
                         "before sending it")
            state.set_stage(item.id, Stage.MISSING, error=error, outcome_unknown=True)
        else:
            error = (f"S3 accepted the upload but no PracSuite record appeared within "
                     f"{waited:.0f}s; run `pracsuite-ingest reconcile` later to look again"
                     f"{note}")
            state.set_stage(item.id, Stage.MISSING, error=error)
    state.commit()
    return absent
