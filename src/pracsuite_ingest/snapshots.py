"""Each patient's records before this run's first upload to it: the snapshot that tells
new records (maybe ours) from those that were there (never ours).

Taken once per patient per run, under a per-patient lock, before its first presign;
kept in the state file so that a resumed run reuses it. A patient whose list cannot be
read (its retries spent) is refused for the rest of the run: its other files fail at
once with that reason instead of each asking again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from pracsuite_ingest.api import PracSuiteClient
from pracsuite_ingest.errors import Permanent, Retryable
from pracsuite_ingest.logs import bind_context
from pracsuite_ingest.reconcile.facts import record_id
from pracsuite_ingest.reconcile.records import list_records
from pracsuite_ingest.retry import PolicyRetrier
from pracsuite_ingest.state import State


def snapshot_failed_text(reason: str) -> str:
    """Why a patient's files are not sent when its list could not be read first."""
    return (f"the patient's attachment list could not be read before the first upload "
            f"({reason}); none of this patient's files were sent: run again later")


class Snapshots:
    """The run's snapshots, taken as each patient's first file goes out."""

    def __init__(self, state: State, run_id: str, max_attempts: int, rng: random.Random,
                 on_retry: Callable[[BaseException, int, float], None]) -> None:
        self._state, self._run_id = state, run_id
        self._max_attempts, self._rng, self._on_retry = max_attempts, rng, on_retry
        self._locks: dict[str, asyncio.Lock] = {}
        self._refused: dict[str, str] = {}
        self._taken: set[str] = set()

    async def take(self, api: PracSuiteClient, client_id: str) -> None:
        """Before the first upload for a client, remember the records it already has."""
        if client_id in self._taken:  # every later file of the client: no I/O at all
            return
        lock = self._locks.setdefault(client_id, asyncio.Lock())
        async with lock:
            bind_context(stage="snapshot")
            if client_id in self._refused:
                raise Permanent(self._refused[client_id])
            if self._state.has_snapshot(self._run_id, client_id):
                self._taken.add(client_id)
                return
            try:
                # Only the ids are kept, page by page (reconcile/facts.py); the walk's
                # caps grow with the records our earlier runs gave it (list_walk.py).
                records = await list_records(api, client_id, PolicyRetrier(
                    self._max_attempts, self._rng, self._on_retry), record_id,
                    len(self._state.claimed(client_id)))
            except (Permanent, Retryable) as exc:
                # Its retries are spent: the patient's other files fail with this reason
                # at once, instead of each asking again (20 files x the timeout).
                self._refused[client_id] = snapshot_failed_text(str(exc))
                raise
            self._state.save_snapshot(self._run_id, client_id, records)
            self._taken.add(client_id)
