"""PracSuite's asynchronous validation of stored uploads, in supervised tasks.

When S3 reports a stored object whose key was presigned, a task waits the
validation delay, looks the object up (a HEAD's worth: its size), applies
`ledger.validation_failure` and creates the record or notes the failure. Every task
is tracked: `aclose` cancels the ones still waiting and awaits them all, and a task
that crashes is logged and shown in the stats rather than lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from collections.abc import Awaitable, Callable
from datetime import date

from .ledger import Ledger, PendingUpload, validation_failure
from .stats import Stats
from .store import ObjectLookup

_log = logging.getLogger(__name__)


class Validator:
    """Turns stored uploads into records, after `delay_s`, one task per upload."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        lookup: ObjectLookup,
        bucket: str,
        stats: Stats,
        delay_s: float,
        max_bytes: int,
        reject_names: re.Pattern[str] | None,
        accept_empty: bool = False,
        today: Callable[[], date] = date.today,
        others_rate: float = 0.0,
        put_object: Callable[[str, str, bytes], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._ledger = ledger
        self._lookup = lookup
        self._bucket = bucket
        self._stats = stats
        self._delay_s = delay_s
        self._max_bytes = max_bytes
        self._reject_names = reject_names
        self._accept_empty = accept_empty
        self._today = today
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._others_rate = others_rate
        self._put_object = put_object
        self._rng = rng or random.Random()

    @property
    def pending_count(self) -> int:
        """Validations started and not finished."""
        return len(self._tasks)

    def object_stored(self, bucket: str, key: str, size: int) -> None:
        """S3's notification: start validating if `key` was presigned by this API.

        Must be called from the event loop. Ignored after `aclose`. `size` is what S3
        received; validation looks the object up again, as PracSuite would.
        """
        del size
        pending = self._ledger.pending(key)
        if self._closed or bucket != self._bucket or pending is None:
            return
        task = asyncio.create_task(self._validate(pending), name=f"validate {pending.upload_id}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    async def aclose(self) -> None:
        """Cancel validations still waiting and wait until every task has ended."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _validate(self, pending: PendingUpload) -> None:
        await asyncio.sleep(self._delay_s)
        size = await self._lookup.size_of(self._bucket, pending.key)
        reason = validation_failure(
            pending, size, max_bytes=self._max_bytes, reject_names=self._reject_names,
            accept_empty=self._accept_empty,
        )
        if reason is None and size is not None:
            if self._put_object is not None and self._rng.random() < self._others_rate:
                await self._lookalike(pending, size)
            self._ledger.create_record(pending, size, self._today())
            return
        self._stats.validation_failures.append(
            {
                "client_id": pending.client_id,
                "file_name": pending.file_name,
                "key": pending.key,
                "size": size,
                "reason": reason,
            }
        )

    async def _lookalike(self, pending: PendingUpload, size: int) -> None:
        """Someone else uploads a file with the same name and size for the same patient
        (other bytes): its record appears with ours, just before it, as a front desk
        re-scan during the run would. Its bytes are stored so that they can be read."""
        assert self._put_object is not None
        key = self._ledger.lookalike_key(pending)
        data = os.urandom(size)
        await self._put_object(self._bucket, key, data)
        self._ledger.create_other(pending, key, size, self._today())

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            _log.error("sandbox validation crashed: %s", task.get_name(), exc_info=exc)
            self._stats.validation_errors.append(f"{task.get_name()}: {exc!r}")
