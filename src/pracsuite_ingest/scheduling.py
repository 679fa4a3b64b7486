"""When to poll which patient (pure): the reconcile schedule.

PracSuite creates a record some time after the upload (its validation delay, unknown
and unpublished). Polling every waiting patient at every interval spends one list call
per patient per interval; polling each patient once, when its uploads are likely
validated, spends one. `Schedule` decides that moment from what the run has seen:

- `estimate`: how long after a patient's last upload its records are likely there.
  It starts at `reconcile.poll_interval_s` (also its floor). A patient's first poll
  after its last upload that finds none of its uploads (too early) raises it to 1.5 x
  that poll's delay; one that finds them all lowers it by `SHRINK`, probing down
  again, never below the floor. A poll found some but not all (a late one, or a
  rejected file) says nothing about the delay and leaves it.
- Each patient is due `estimate` after its latest upload ended (or at the last look
  before the deadline, if that comes first); after an unfruitful poll, again
  `interval` later (from `poll_interval_s`, x1.5 per unfruitful poll, up
  to a minute: SPEC's "first interval; grows with backoff"), never before the
  estimate. A new upload of the patient starts its schedule over.

`Activity` counts the uploads in flight per patient: a patient is never polled while
one of its uploads is between presign and S3's answer, and a poll during which one
started does not claim on name and size alone (`reconcile/reconciler.py`).

Times are seconds on one clock (the wall clock: uploads of earlier runs carry their
`uploaded_at`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

GROWTH = 1.5  # SPEC: the interval grows with backoff; also the estimate's step up
SHRINK = 0.99  # after a poll that found everything: probe a little earlier next time
INTERVAL_CAP_S = 60.0  # the longest wait between two polls of a patient (or the floor)
ON_TIME = 2.0  # a poll later than this x the estimate (queued, carried) teaches nothing


@dataclass(slots=True)
class _Patient:
    since: float  # the latest upload end among its waiting uploads
    polls: int = 0  # polls since `since`
    last_poll: float = 0.0
    interval: float = 0.0


@dataclass(frozen=True, slots=True)
class Due:
    client_id: str
    at: float


class Schedule:
    """Which waiting patient to poll next, and when (pure; no clock of its own)."""

    def __init__(self, first_interval_s: float, cap_s: float = INTERVAL_CAP_S) -> None:
        self.floor = first_interval_s
        self.cap = max(cap_s, first_interval_s)
        self.estimate = first_interval_s
        self._patients: dict[str, _Patient] = {}
        self.early = 0  # first polls that found nothing: what the estimate learned from
        self.on_time = 0  # first polls that found every upload

    def waiting(self, client_id: str, last_upload: float) -> None:
        """The patient has uploads awaiting a record, the latest of which ended at
        `last_upload`. A later upload than before starts its schedule over."""
        p = self._patients.get(client_id)
        if p is None or last_upload > p.since:
            self._patients[client_id] = _Patient(last_upload, interval=self.floor)

    def done(self, client_id: str) -> None:
        """Nothing of the patient awaits a record any more."""
        self._patients.pop(client_id, None)

    def since(self, client_id: str) -> float:
        """When the patient's latest upload known to the schedule ended (-inf: none)."""
        p = self._patients.get(client_id)
        return float("-inf") if p is None else p.since

    def due_at(self, client_id: str) -> float:
        p = self._patients[client_id]
        first = p.since + self.estimate
        if p.polls == 0:
            return first
        return max(p.last_poll + p.interval, first)

    def next_due(self, eligible: Collection[str] | None = None,
                 last_look: float | None = None) -> Due | None:
        """The waiting patient due first (among `eligible` ones, when given).

        `last_look`: a time shortly before the deadline. A patient whose next poll would
        come after it, and that has not been polled since it, is due then instead: every
        upload gets a last look before it is declared missing.
        """
        best: Due | None = None
        for cid, p in self._patients.items():
            if eligible is not None and cid not in eligible:
                continue
            at = self.due_at(cid)
            if last_look is not None and at > last_look and not (
                    p.polls and p.last_poll >= last_look):
                at = last_look
            if best is None or at < best.at:
                best = Due(cid, at)
        return best

    def polled(self, client_id: str, at: float, *, found_all: bool, found_none: bool) -> None:
        """A complete poll of the patient, started at `at`, found every upload it
        waited for (`found_all`), none of them (`found_none`), or some."""
        p = self._patients.get(client_id)
        if p is None:
            return
        delay = at - p.since
        if p.polls == 0 and 0 <= delay <= ON_TIME * self.estimate:
            if found_none:
                self.early += 1
                self.estimate = max(self.estimate, GROWTH * delay)
            elif found_all:
                self.on_time += 1
                self.estimate = max(self.floor, self.estimate * SHRINK)
        if found_all:
            self.done(client_id)
            return
        if p.polls > 0:
            p.interval = min(self.cap, p.interval * GROWTH)
        p.polls += 1
        p.last_poll = at

    def clients(self) -> list[str]:
        """The patients waiting, in the order they began to wait."""
        return list(self._patients)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._patients

    def __len__(self) -> int:
        return len(self._patients)


class Activity:
    """Uploads in flight per patient, and how many ever started (a generation)."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._started: dict[str, int] = {}
        self.on_change: Callable[[], None] | None = None  # called as an upload ends

    @contextlib.contextmanager
    def sending(self, client_id: str) -> Iterator[None]:
        """Around one file's presign, upload and the record of S3's answer."""
        self.began(client_id)
        try:
            yield
        finally:
            self.ended(client_id)

    def began(self, client_id: str) -> None:
        self._in_flight[client_id] = self._in_flight.get(client_id, 0) + 1
        self._started[client_id] = self._started.get(client_id, 0) + 1

    def ended(self, client_id: str) -> None:
        left = self._in_flight.get(client_id, 0) - 1
        if left > 0:
            self._in_flight[client_id] = left
        else:
            self._in_flight.pop(client_id, None)
        if self.on_change is not None:
            self.on_change()

    def busy(self, client_id: str) -> bool:
        """An upload of the patient is between its start and S3's answer."""
        return client_id in self._in_flight

    def started(self, client_id: str) -> int:
        """How many uploads of the patient have started: changed during a poll, one
        started meanwhile, and its record may be in the list without its item."""
        return self._started.get(client_id, 0)
