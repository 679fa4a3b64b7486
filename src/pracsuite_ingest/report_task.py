"""The end-of-run report, written off the event loop.

A report of 100,000 rows is some 20 s of work (four passes over the state file: the
summary, the JSON, the CSV, the HTML); on the loop it held everything for that long: no
signal handled, no progress shown. `write_off_loop` runs it in a thread. The loop stays
free, so a second SIGINT/SIGTERM (the contract's "stop now") is acted on at once: the
report stops at its next row (each file is written whole or not at all, `report.py`),
the run exits 130, and the state file keeps every result (`reconcile` writes the report
again).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Any

from pracsuite_ingest.exit_codes import EXIT_INTERRUPTED
from pracsuite_ingest.report import ReportStopped


async def write_off_loop(write: Callable[..., int], *args: Any, **kwargs: Any) -> int:
    """`write(*args, stop=..., **kwargs)` in a thread; its exit code, or 130 when the task
    is cancelled meanwhile (the report is then stopped, and awaited, before returning:
    the caller closes the state file after this)."""
    stop = threading.Event()
    job = asyncio.ensure_future(asyncio.to_thread(write, *args, stop=stop, **kwargs))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        stop.set()
    while not job.done():  # it stops within a row; a third signal changes nothing
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({job})
    task = asyncio.current_task()
    while task is not None and task.cancelling():
        task.uncancel()
    failed = job.exception()
    if failed is None:  # it was done when the signal came
        return job.result()
    if not isinstance(failed, ReportStopped):
        raise failed
    print("pracsuite-ingest: stopped before the report was written; the state file holds "
          "every result: `pracsuite-ingest reconcile` writes it", file=sys.stderr)
    return EXIT_INTERRUPTED
