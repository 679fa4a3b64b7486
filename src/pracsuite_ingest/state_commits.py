"""Group commits of the state file: many stage changes, one commit.

A commit writes every page it changed, whole, to the WAL (then, at a checkpoint, to the
file); a stage change is a few bytes of a page. Committed one by one, a run of 1 KB
files wrote ~23-29 KB to disk per file (bench/scale.py); committed together, the items
in flight share their pages.

`GroupCommits` commits the state's pending writes at most every `every_s` (~50 ms)
while an upload waits for its commit (`durable`), and within `COMMIT_EVERY_S` otherwise
(what `status`, another process, lags by). A file presigned ahead of the upload slots
(`presign_ahead`) moves to `uploading`, with its key, as it starts waiting for a slot
(`RunEvents.ready`); in the slot, its upload starts only once `durable` returned
(`RunEvents.sending`): its key is on disk before its first byte leaves, which is what
lets the next run, after a kill, find it and reconcile it instead of sending it twice.
One commit thus carries the moves of every file waiting, and the next slots to free find
theirs committed already. A file that waited for a slot and was never sent (the run
stopped) goes back to `presigned` (`pending`); killed meanwhile, it is reconciled by the
next run, then sent. Everything else a crash may lose is harmless (state.py says why).
No task: the commit is a loop callback, scheduled when needed.
"""

from __future__ import annotations

import asyncio

from pracsuite_ingest.errors import StateUnusable
from pracsuite_ingest.state import COMMIT_EVERY_S, State

GROUP_COMMIT_S = 0.05  # the least time between two commits an upload waits for


class GroupCommits:
    """The state's one committer during a run; `close` commits what is pending."""

    def __init__(self, state: State, every_s: float = GROUP_COMMIT_S) -> None:
        self._state = state
        self._every_s = every_s
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()  # when the last commit happened
        self._timer: asyncio.TimerHandle | None = None
        self._due = float("inf")  # when the scheduled commit runs
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._broken: StateUnusable | None = None
        self.commits = 0  # the commits this committer made
        state.on_pending = self._pending

    async def durable(self) -> None:
        """Return once every write made so far is committed (on disk for the next run)."""
        target = self._state.writes
        if self._state.committed >= target:
            return
        if self._broken is not None:
            raise self._broken
        waiter = self._loop.create_future()
        self._waiters.append((target, waiter))
        self._schedule(self._last + self._every_s)
        await waiter

    def close(self) -> None:
        """Commit what is pending now and stop committing (the run's end)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._state.on_pending = None
        self._commit()
        if self._broken is not None:  # what was pending is lost: the run must not say done
            raise self._broken

    def _pending(self) -> None:
        """A write was left pending: commit it within COMMIT_EVERY_S."""
        self._schedule(self._loop.time() + COMMIT_EVERY_S)

    def _schedule(self, at: float) -> None:
        if self._timer is not None and self._due <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._due = at
        delay = at - self._loop.time()
        # Even when due now, after this loop turn: the slots that reach `uploading`
        # in the same turn share the commit.
        self._timer = self._loop.call_later(max(delay, 0.0), self._commit)

    def _commit(self) -> None:
        self._timer = None
        self._due = float("inf")
        try:
            if self._state.committed != self._state.writes:
                self._state.commit()
                self.commits += 1
        except StateUnusable as exc:
            self._broken = exc
            for _, waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            self._waiters = []
            return
        self._last = self._loop.time()
        done = self._state.committed
        waiting = []
        for target, waiter in self._waiters:
            if target > done:
                waiting.append((target, waiter))
            elif not waiter.done():
                waiter.set_result(None)
        self._waiters = waiting
        if waiting:
            self._schedule(self._last + self._every_s)
