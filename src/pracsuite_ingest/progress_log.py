"""Progress off a terminal: one "progress" log line every `log.progress_interval_s`.

A scheduler's log (JSON lines) gets no display; instead, a daemon thread writes what
the display would show, as fields: files and bytes done and total, validated so far,
the API's pace and the send phase's ETA (`progress.progress_fields`). It reads the same
plain counters the display reads, so the pipeline never waits for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import structlog

from pracsuite_ingest.logs import get_logger
from pracsuite_ingest.models import Row
from pracsuite_ingest.progress import RowCount, SendRate, progress_fields

if TYPE_CHECKING:
    from pracsuite_ingest.counters import Counters


class ProgressLog:
    """Writes a "progress" line every `interval_s` from `attach` to `close`."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._count: RowCount | None = None

    def attach(self, counters: Counters,
               rows: Callable[[], Iterable[Row]] | None = None) -> None:
        if self._thread is not None:
            return
        self._count = RowCount(rows) if rows is not None else None
        bound = structlog.contextvars.get_contextvars()  # the run id, for every line
        self._thread = threading.Thread(target=self._loop, args=(counters, bound),
                                        daemon=True, name="pracsuite-progress-log")
        self._thread.start()

    def _loop(self, counters: Counters, bound: dict[str, object]) -> None:
        log = get_logger(**bound)
        rate = SendRate(window_s=self.interval_s)
        rate.sample(time.monotonic(), counters.bytes_sent)
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            rate.sample(now, counters.bytes_sent)
            log.info("progress", **progress_fields(counters, self._count, rate, time.time()))

    def close(self) -> None:
        self._stop.set()
        if self._count is not None:
            self._count.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
