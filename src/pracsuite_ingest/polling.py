"""The reconcile polling loop (I/O): ask PracSuite until every upload has its record.

The matching itself is pure and lives in `reconcile.py`; this loop owns the deadline,
the poll intervals, and the one decision that lets a lost upload be sent again.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from pracsuite_ingest import reconcile as rc
from pracsuite_ingest.api import PracSuiteClient
from pracsuite_ingest.counters import Counters
from pracsuite_ingest.errors import Permanent, Retryable
from pracsuite_ingest.models import Stage
from pracsuite_ingest.retry import PolicyRetrier
from pracsuite_ingest.settings import Settings
from pracsuite_ingest.state import ItemRecord, State


def _upload_of(item: ItemRecord, before: frozenset[str]) -> rc.Upload:
    return rc.Upload(item.id, item.client_id, item.file_name, item.size, item.key or "",
                     before)


async def reconcile_run(state: State, api: PracSuiteClient | None, settings: Settings,
                        run_id: str, deadline_s: float, shutdown: asyncio.Event,
                        log: Any, counters: Counters | None = None) -> set[int]:
    """Poll until every awaiting upload of the run has a record, or the deadline passes.

    Returns the ids of uploads whose S3 answer was lost and that PracSuite is *known*
    not to hold: a complete poll of their client after the deadline found no record.
    Only those may be sent again (SPEC.md guarantees); a lost upload whose client
    could not be asked stays unknown, and the next run asks again before sending.
    """
    assert api is not None
    c = counters or Counters()
    c.reconcile_until = time.time() + deadline_s
    c.reconcile_end = ""
    try:
        absent = await _reconcile(state, api, settings, run_id, deadline_s, shutdown, log, c)
        # The display's last frame shows the outcome: what is still without a record.
        c.awaiting = len(state.awaiting(run_id))
    except BaseException:
        c.reconcile_end = "stopped"
        raise
    c.reconcile_end = "stopped" if shutdown.is_set() else "done"
    return absent


async def _reconcile(state: State, api: PracSuiteClient, settings: Settings, run_id: str,
                     deadline_s: float, shutdown: asyncio.Event, log: Any,
                     c: Counters) -> set[int]:
    started = time.monotonic()
    deadline = started + deadline_s

    def on_retry(exc: BaseException, attempt: int, delay: float) -> None:
        c.retries += 1
        log.warning("retrying", stage="reconcile", error=str(exc), attempt=attempt,
                    delay_s=round(delay, 2))

    names: dict[str, str] = {}
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

    async def poll(client_id: str, items: list[ItemRecord], limit_s: float) -> bool:
        """One complete look at the client's records; False if PracSuite could not be asked."""
        claims = state.claims(client_id)
        uploads = [_upload_of(i, before(i)) for i in items]
        found = rc.proven_by_own_key(uploads, claims)
        waiting = [u for u in uploads if u.item_id not in found]
        try:
            if waiting:
                async with asyncio.timeout(limit_s):
                    found |= await rc.match_client(api, client_id, waiting, claims.keys(),
                                                   names, call)
        except (Permanent, Retryable, TimeoutError) as exc:
            log.warning("reconcile poll failed", stage="reconcile", client_id=client_id,
                        error=str(exc) or type(exc).__name__)
            return False
        by_id = {i.id: i for i in items}
        for item_id, record in found.items():
            state.set_stage(item_id, Stage.VALIDATED, attachment_id=record, error=None)
            c.tally(Stage.VALIDATED)
            c.awaiting -= 1
            log.info("item validated", stage="reconcile", client_id=client_id,
                     item=by_id[item_id].seq, attachment_id=record,
                     file_name=by_id[item_id].file_name)
        state.commit()  # one commit per poll, not per record
        return True

    def by_client(items: list[ItemRecord]) -> dict[str, list[ItemRecord]]:
        out: dict[str, list[ItemRecord]] = {}
        for item in items:
            out.setdefault(item.client_id, []).append(item)
        return out

    interval = settings.reconcile.poll_interval_s  # SPEC: the first interval; then x1.5
    while True:
        awaiting = state.awaiting(run_id)
        c.awaiting = len(awaiting)
        for client_id, items in by_client(awaiting).items():
            if shutdown.is_set():
                return set()
            # Each call is retried on its own; the poll stops at the deadline (with a
            # few seconds' grace so that a late poll can still finish).
            await poll(client_id, items, max(deadline - time.monotonic(), 5.0))
        if not state.awaiting(run_id):
            return set()
        if shutdown.is_set() or not await rc.sleep_until_next_poll(interval, deadline):
            break
        interval = rc.next_poll_interval(interval, settings.reconcile.poll_interval_s)
    if shutdown.is_set():
        return set()
    # The deadline passed. Before anything lost is declared absent, look once more,
    # completely, at each client that has one (bounded by the retry policy only).
    lost = [i for i in state.awaiting(run_id) if i.outcome_unknown or i.stage is Stage.UPLOADING]
    asked: set[str] = set()
    for client_id, items in by_client(lost).items():
        limit = settings.api.timeout_s * settings.api.max_attempts + 60.0
        if await poll(client_id, items, limit):
            asked.add(client_id)
    waited = time.monotonic() - started
    absent: set[int] = set()
    for item in state.awaiting(run_id):
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
                     f"{waited:.0f}s; run `pracsuite-ingest reconcile` later to look again")
            state.set_stage(item.id, Stage.MISSING, error=error)
    state.commit()
    return absent
