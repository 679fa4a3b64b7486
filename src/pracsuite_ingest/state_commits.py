"""Group commits of the state file: many stage changes, one commit.

A commit writes every page it changed, whole, to the WAL (then, at a checkpoint, to the
file); a stage change is a few bytes of a page. Committed one by one, a run of 1 KB
files wrote ~23-29 KB to disk per file (bench/scale.py); committed together, the files
of a few seconds share their pages.

No upload waits for a commit: what must be kept before an upload starts (its move to
`uploading` with its presigned key) is in the send log once `State.start_upload`
returns (`send_log.py`). So the state's writes stay pending and are committed together
by the first write `COMMIT_EVERY_S` after they began (`State._write`), or, when writes
stop coming, by `GroupCommits`' timer within `COMMIT_EVERY_S` (what `status`, another
process, lags by); `close` commits the rest. A file that waited for a slot and was
never sent stays `presigned` (`pending`): the next run sends it. Everything else a
crash may lose is harmless (state.py says why). No task: the commit is a loop callback,
scheduled when a write is left pending.
"""

from __future__ import annotations

import asyncio

from pracsuite_ingest.errors import StateUnusable
from pracsuite_ingest.state import COMMIT_EVERY_S, State


class GroupCommits:
    """The state's one committer during a run (`start` at the first upload); `close`
    commits what is pending."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._broken: StateUnusable | None = None
        self.commits = 0  # the commits this committer made

    def start(self) -> None:
        """Commit, from now on, what is left pending within COMMIT_EVERY_S (idempotent;
        in the running loop)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._state.on_pending = self._pending

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
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(COMMIT_EVERY_S, self._commit)

    def _commit(self) -> None:
        self._timer = None
        try:
            if self._state.committed != self._state.writes:
                self._state.commit()
                self.commits += 1
        except StateUnusable as exc:
            self._broken = exc
