"""The reconcile loop (I/O): ask PracSuite until every upload has its record.

`Reconciler` owns one round: the deadline, a few patients' polls at a time
(`POLLS_IN_FLIGHT`, the rate gate pacing every call; when to poll whom is
`scheduling.py`'s), and, at the deadline, the last look and the verdict (`verdict.py`)
that lets a lost upload be sent again. One poll of one patient (its records, the
downloads that let the bytes decide, the claims) is `poll.py`'s. It runs alongside
the uploads (`UploadPhase`): a patient's uploads are confirmed while later patients'
are still being sent; the deadline starts when the last upload of the run finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pracsuite_ingest.api import PracSuiteClient
from pracsuite_ingest.counters import Counters
from pracsuite_ingest.errors import QuotaSpent
from pracsuite_ingest.models import Stage
from pracsuite_ingest.reconcile.big_polls import Slices, compute
from pracsuite_ingest.reconcile.claims import VerifyMode
from pracsuite_ingest.reconcile.match import Upload
from pracsuite_ingest.reconcile.poll import Polls
from pracsuite_ingest.reconcile.records import RecordReader
from pracsuite_ingest.reconcile.sources import StateUploads, UploadSource
from pracsuite_ingest.reconcile.verdict import is_carried, is_lost, verdict
from pracsuite_ingest.retry import PolicyRetrier
from pracsuite_ingest.scheduling import Activity, Due, Schedule
from pracsuite_ingest.settings import Settings
from pracsuite_ingest.state import ItemRecord, State
from pracsuite_ingest.verification import Verifier

POLLS_IN_FLIGHT = 4  # patients polled at once; the rate gate still paces every call
IDLE_TICK_S = 1.0  # the longest the loop sleeps before it looks at shutdown and state again
LAST_LOOK_S = 5.0  # the last poll of a patient still waiting, at most this before the deadline
REFRESH_S = 0.25  # uploads ending read from the state at most this often (one query each)
# ... and no more often than REFRESH_COST times what the last read took: the query reads
# every upload still waiting, 100,000 in a big run's upload phase (tens of ms), so its
# cost on the loop stays a few per cent, not a cost per upload that grows with the run.
REFRESH_COST = 30.0
REFRESH_MAX_S = 5.0  # ... and at least this often (one slow read on a loaded machine)


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


async def reconcile_run(state: State, api: PracSuiteClient | None, settings: Settings,
                        run_id: str, deadline_s: float, shutdown: asyncio.Event,
                        log: Any, counters: Counters | None = None,
                        uploads: UploadPhase | None = None, *,
                        on_quota: Callable[[QuotaSpent], None] | None = None) -> set[int]:
    """Poll until every awaiting upload of the run has a record, or the deadline passes.

    With `uploads` (a run's first round), it runs while the uploads go on: it polls
    each patient once no upload of it is in flight and its records are likely there,
    and the deadline counts from `uploads.finished`; without, from now.

    Returns the ids of uploads whose S3 answer was lost and that PracSuite is *known*
    not to hold (`verdict.py`): only those may be sent again. `on_quota`: what to do
    when PracSuite's quota is spent (a run stops as on SIGTERM: `shutdown` is set and
    nothing is declared missing); without it, `QuotaSpent` ends the round.
    """
    assert api is not None
    c = counters or Counters()
    c.reconcile_end = ""
    if uploads is None:
        uploads = UploadPhase()
        uploads.finish()
    try:
        absent = await Reconciler(state, api, settings, run_id, shutdown, log, c,
                                  uploads, on_quota).run(deadline_s)
        # The display's last frame shows the outcome: what is still without a record.
        c.awaiting = state.awaiting_since(run_id)[1]  # a count, not 100,000 items read
    except BaseException:
        c.reconcile_end = "stopped"
        raise
    c.reconcile_end = "stopped" if shutdown.is_set() else "done"
    return absent


def _by_client(items: list[ItemRecord]) -> dict[str, list[ItemRecord]]:
    out: dict[str, list[ItemRecord]] = {}
    for item in items:
        out.setdefault(item.client_id, []).append(item)
    return out


class Reconciler:
    """One reconcile round of a run: polls, claims, and the verdict at the deadline."""

    def __init__(self, state: State, api: PracSuiteClient, settings: Settings, run_id: str,
                 shutdown: asyncio.Event, log: Any, counters: Counters,
                 uploads: UploadPhase,
                 on_quota: Callable[[QuotaSpent], None] | None = None) -> None:
        self.state = state
        self.run_id = run_id
        self.shutdown = shutdown
        self.log = log
        self.c = counters
        self.uploads = uploads
        reader = RecordReader(api, PolicyRetrier(settings.api.max_attempts, random.Random(),
                                                 self._on_retry))
        verifier = Verifier(api.session, settings.reconcile.verify_concurrency,
                            base_url=settings.api.base_url)
        self.polls = Polls(state, run_id, reader, verifier,
                           VerifyMode(settings.reconcile.verify), log, counters,
                           uploads.activity.started, on_quota)
        self.poll_interval_s = settings.reconcile.poll_interval_s
        self.max_resends = settings.reconcile.max_resends
        self.schedule = Schedule(self.poll_interval_s)
        self._slots = asyncio.Semaphore(POLLS_IN_FLIGHT)
        self._polling: set[str] = set()
        self._retry_bound_s = settings.api.timeout_s * settings.api.max_attempts + 60.0
        self.deadline: float | None = None  # monotonic; set when the last upload finished
        self._last_look: float | None = None  # wall clock: every waiting patient polled after
        self.started = time.monotonic()
        self._refreshed_at = -REFRESH_S
        self._refresh_every = REFRESH_S  # REFRESH_S, or REFRESH_COST x the last read

    def _on_retry(self, exc: BaseException, attempt: int, delay: float) -> None:
        self.c.retries += 1
        self.log.warning("retrying", stage="reconcile", error=str(exc), attempt=attempt,
                         delay_s=round(delay, 2))

    # ------------------------------------------------------------------ the round
    async def run(self, deadline_s: float) -> set[int]:
        """Poll until the deadline (or until nothing waits); then the verdict."""
        async with asyncio.TaskGroup() as tg:
            polls: set[asyncio.Task[None]] = set()
            stopper = tg.create_task(self._stop_polls(polls))
            while not self.shutdown.is_set():
                self.uploads.wake.clear()
                if self.deadline is None and self.uploads.finished.is_set():
                    self._start_deadline(deadline_s)
                if self.uploads.dirty and (self.deadline is not None or
                                           time.monotonic() - self._refreshed_at
                                           >= self._refresh_every):
                    self._timed_refresh()
                if self._over():
                    break
                eligible = {k for k in self.schedule.clients()
                            if k not in self._polling and not self.uploads.activity.busy(k)}
                due = self.schedule.next_due(eligible, self._last_look)
                now = time.time()
                if due is not None and due.at <= now and (
                        self.deadline is None or time.monotonic() < self.deadline):
                    # Chosen while none of its uploads is in flight: one that starts before
                    # the poll's first step changes this count, as one started during it.
                    generation = self.uploads.activity.started(due.client_id)
                    await self._slots.acquire()  # the slot before the task: a few at a time
                    if self.shutdown.is_set():
                        self._slots.release()
                        break
                    self._polling.add(due.client_id)
                    task = tg.create_task(self.poll_patient(due.client_id, generation))
                    polls.add(task)
                    task.add_done_callback(polls.discard)
                    continue
                await self._idle(due, now)
            stopper.cancel()
        self.log.debug("reconcile schedule", stage="reconcile",
                       estimate_s=round(self.schedule.estimate, 2), early=self.schedule.early,
                       on_time=self.schedule.on_time)
        if self.shutdown.is_set():
            return set()
        return await self.verdict()

    async def _stop_polls(self, polls: set[asyncio.Task[None]]) -> None:
        """On a shutdown, the polls in flight stop where they are: what they wrote is
        kept (committed at the run's end), what they had not decided waits for the next run (a
        poll of 100,000 uploads would otherwise run on for minutes after a SIGTERM)."""
        await self.shutdown.wait()
        for task in list(polls):
            task.cancel()
        self.uploads.wake.set()

    def _start_deadline(self, deadline_s: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + deadline_s
        self.c.reconcile_until = time.time() + deadline_s
        self._last_look = self.c.reconcile_until - min(self.poll_interval_s, LAST_LOOK_S,
                                                       deadline_s / 2)

    def _over(self) -> bool:
        """After the uploads, with no poll in flight: nothing waits, or the deadline
        passed (what the polls left is read once more before giving up)."""
        if self.deadline is None or self._polling or (
                self.schedule and time.monotonic() < self.deadline):
            return False
        self.refresh()
        return not self.schedule or time.monotonic() >= self.deadline

    async def _idle(self, due: Due | None, now: float) -> None:
        """Wait for the next due poll, an upload ending, or the deadline."""
        wait = IDLE_TICK_S if due is None else min(IDLE_TICK_S, max(due.at - now, 0.0))
        if self.deadline is not None and time.monotonic() < self.deadline:
            wait = min(wait, self.deadline - time.monotonic())
        elif self.deadline is not None:
            wait = IDLE_TICK_S  # past it: only the polls in flight are awaited
        if self.uploads.dirty and self.deadline is None:
            wait = min(wait, max(self._refreshed_at + self._refresh_every - time.monotonic(),
                                 0.0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self.uploads.wake.wait()

    def _timed_refresh(self) -> None:
        started = time.monotonic()
        self.refresh()
        self._refreshed_at = time.monotonic()
        self._refresh_every = min(REFRESH_MAX_S, max(
            REFRESH_S, REFRESH_COST * (self._refreshed_at - started)))

    def refresh(self) -> None:
        """Read which patients wait, and since when (once per upload ended, not per poll:
        a poll's findings reach the schedule through `polled`)."""
        self.uploads.dirty = False
        waiting, count = self.state.awaiting_since(self.run_id)
        for client_id, since in waiting.items():
            self.schedule.waiting(client_id, since)
        for client_id in [k for k in self.schedule.clients() if k not in waiting]:
            if client_id not in self._polling:
                self.schedule.done(client_id)
        self.c.awaiting = count

    async def poll_patient(self, client_id: str, generation: int) -> None:
        """A scheduled poll of one patient (its slot taken by the loop, released here)."""
        try:
            count, latest = self.state.awaiting_count(self.run_id, client_id)
            if not count:
                self.schedule.done(client_id)
                return
            if latest is not None and latest > self.schedule.since(client_id):
                self.schedule.waiting(client_id, latest)  # an upload ended since the last read
                return
            at = time.time()
            # Each call is retried on its own; after the uploads, a poll stops at the
            # deadline (with a few seconds' grace so that a late poll can still finish).
            limit = (self._retry_bound_s if self.deadline is None
                     else max(self.deadline - time.monotonic(), 5.0))
            uploads = StateUploads(self.state, self.run_id, client_id, self.polls.upload_of)
            complete, found = await self.poll(client_id, uploads, limit, generation)
            self.schedule.polled(client_id, at, found_all=complete and found == count,
                                 found_none=complete and found == 0)
        finally:
            self._polling.discard(client_id)
            self._slots.release()
            self.uploads.wake.set()

    async def poll(self, client_id: str, items: list[Upload] | UploadSource, limit_s: float,
                   generation: int | None = None) -> tuple[bool, int]:
        """One look at the client's records (`Polls.poll`): whether it was complete, and
        how many uploads it validated."""
        return await self.polls.poll(client_id, items, limit_s, generation)

    # ------------------------------------------------------------------ the deadline
    async def verdict(self) -> set[int]:
        """The deadline passed. Before anything lost is declared absent, look once more,
        completely, at each client that has one (bounded by the retry policy only); then
        every upload still waiting is missing. Returns the uploads to send again (lost,
        or sent by an earlier run: each client with one is looked at once more)."""
        lost = [i for i in self.state.awaiting(self.run_id) if is_lost(i) or is_carried(i)]
        asked: set[str] = set()
        for client_id in _by_client(lost):
            # Every upload of the client still waiting, not only the lost ones: a count of
            # records against part of them could call a crowded match single.
            ups = await self.polls.uploads_of(self.state.awaiting(self.run_id, client_id))
            complete, _ = await self.poll(client_id, ups, self._retry_bound_s)
            if complete:
                asked.add(client_id)
        if self.shutdown.is_set():  # stopped meanwhile (a spent quota): nothing is missing
            return set()
        waited = time.monotonic() - self.started
        items = self.state.awaiting(self.run_id)
        # What is left may be a whole patient's 100,000 files (its list unreadable): each
        # step gives the loop back (`Slices`), the pure verdict runs in a thread.
        sends: dict[int, int] = {}
        slices = Slices()
        for i in items:
            sends[i.id] = self.state.sends_of(i.client_id, i.file_name, i.sha256 or "")
            await slices.tick()
        polls = self.polls
        unlisted = {i.client_id: polls.list_errors.get(i.client_id, "") for i in items
                    if i.client_id not in polls.listed}
        result = await compute(len(items), verdict, items, polls.ambiguous, polls.differ,
                               asked, waited, sends, self.max_resends, polls.unread,
                               unlisted=unlisted)
        for unasked in result.unasked:  # stays pending: the next run asks again
            self.state.note(unasked.item_id, unasked.error)
            await slices.tick()
        for missing in result.missing:
            if missing.outcome_unknown:
                self.state.set_stage(missing.item_id, Stage.MISSING, error=missing.error,
                                     outcome_unknown=True)
            else:
                self.state.set_stage(missing.item_id, Stage.MISSING, error=missing.error)
            await slices.tick()
        self.state.commit()
        return result.resend
