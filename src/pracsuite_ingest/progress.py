"""A live progress display on a terminal, drawn from the counters the pipeline keeps.

On only when stdout and stderr are both terminals, logs are not JSON, and `--quiet`
was not given: a scheduler's log never sees it. The display reads `Counters` (plain
ints the pipeline bumps) from rich's refresh thread four times a second, so the
pipeline never waits for it; while it is shown, log lines print above it (rich
redirects stderr, and `logs.configure` writes to whatever `sys.stderr` is).

The numbers themselves are decided by the pure functions at the top; what rich draws
is in progress_live.py, imported only when the display is on.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from pracsuite_ingest.models import Row, Stage

if TYPE_CHECKING:
    from rich.live import Live

    from pracsuite_ingest.counters import Counters

# Where an item ends the send phase; each one is a file done for the progress bar.
SEND_PHASE_ENDS = (Stage.INVALID, Stage.SKIPPED, Stage.FAILED, Stage.UPLOADED,
                   Stage.UPLOADING, Stage.SEEN)


def wanted(*, quiet: bool, log_format: str, stdout_tty: bool, stderr_tty: bool) -> bool:
    """Whether to show the display: a person at a terminal, and no JSON logs to spoil."""
    return not quiet and stdout_tty and stderr_tty and log_format != "json"


def files_done(c: Counters) -> int:
    """Items that finished the send phase (checked, skipped, failed, or uploaded)."""
    return sum(c.by_stage.get(s, 0) for s in SEND_PHASE_ENDS)


def awaiting_validation(c: Counters) -> int:
    """Uploads that S3 took (or may have) and that PracSuite has not yet shown."""
    if c.reconcile_until:
        return c.awaiting
    return (c.by_stage.get(Stage.UPLOADED, 0) + c.by_stage.get(Stage.UPLOADING, 0)
            - c.by_stage.get(Stage.VALIDATED, 0))


def status_line(c: Counters) -> str:
    parts = [
        ("presigning", c.presigning),
        ("uploading", c.in_flight),
        ("awaiting validation", awaiting_validation(c)),
        ("validated", c.by_stage.get(Stage.VALIDATED, 0)),
        ("failed", c.by_stage.get(Stage.FAILED, 0)),
        ("invalid", c.by_stage.get(Stage.INVALID, 0)),
        ("skipped", c.by_stage.get(Stage.SKIPPED, 0)),
        ("retries", c.retries),
    ]
    if c.by_stage.get(Stage.SEEN, 0):
        parts.insert(0, ("would send", c.by_stage[Stage.SEEN]))
    return " · ".join(f"{label} {n}" for label, n in parts)


def pace_line(c: Counters) -> str | None:
    """PracSuite's API as this process uses it: the rate now (where "auto" stands), the
    calls made and the share throttled; None before the run has a gate."""
    if c.pace is None:
        return None
    p = c.pace()
    share = f" ({p.throttled / p.calls:.1%})" if p.calls else ""
    where = "now" if p.mode == "auto" else "limit"
    return (f"api: {p.requests_per_second:.1f} requests/s {where} ({p.mode}) · "
            f"{p.calls:,} calls · {p.throttled:,} throttled{share}")


def reconcile_line(c: Counters, now: float) -> str | None:
    """The reconcile phase, or None outside it: how many uploads are awaited, how many
    PracSuite validated so far, and when the worker gives up waiting (local HH:MM): a
    deadline, not an estimate. Once the phase is over, its outcome."""
    del now  # the deadline is shown as a time of day, not a countdown that reads as an ETA
    if not c.reconcile_until:
        return None
    validated = c.by_stage.get(Stage.VALIDATED, 0)
    if c.reconcile_end == "stopped":
        return (f"reconcile: stopped: {validated} validated, {c.awaiting} still awaited "
                "(the next run asks PracSuite again)")
    if c.reconcile_end:
        if not c.awaiting:
            return f"reconcile: done: every upload validated ({validated} this run)"
        return (f"reconcile: done: {validated} validated, {c.awaiting} not shown by PracSuite "
                "in time (missing: `reconcile` looks again)")
    gives_up = datetime.fromtimestamp(c.reconcile_until).strftime("%H:%M")
    return (f"reconcile: {c.awaiting} awaited · {validated} validated so far · "
            f"gives up at {gives_up} if PracSuite has not shown them by then")


def eta_text(c: Counters, total: int | None, seconds_left: float | None) -> str:
    """The send phase's ETA for the files row. Blank once every file is sent (the
    reconcile line says what comes next), so an "eta 0:00:00" never shows while the
    run goes on; rounded up, so it reads 0:00:01 until the last file is done."""
    if c.reconcile_until or (total is not None and files_done(c) >= total):
        return ""
    if seconds_left is None:
        return "eta -:--:--"
    minutes, seconds = divmod(math.ceil(seconds_left), 60)
    hours, minutes = divmod(minutes, 60)
    return f"eta {hours}:{minutes:02d}:{seconds:02d}"


class RowCount:
    """Counts the input rows in a daemon thread, so the bar can show a total.

    The count reads the same filtered rows as the run (no stat, no hashing); a run
    that ends first just stops looking at it. `total` is None until it is done.
    """

    def __init__(self, rows: Callable[[], Iterable[Row]]) -> None:
        self.total: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._count, args=(rows,), daemon=True,
                                        name="pracsuite-row-count")
        self._thread.start()

    def _count(self, rows: Callable[[], Iterable[Row]]) -> None:
        n = 0
        try:
            for _ in rows():
                if self._stop.is_set():
                    return
                n += 1
        except Exception:  # the run itself reports a bad input
            return
        self.total = n

    def stop(self) -> None:
        self._stop.set()


class TerminalProgress:
    """The display for one command; every method is a no-op when it is off."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._live: Live | None = None
        self._count: RowCount | None = None

    @classmethod
    def for_terminal(cls, *, quiet: bool, log_format: str) -> TerminalProgress:
        enabled = wanted(quiet=quiet, log_format=log_format, stdout_tty=sys.stdout.isatty(),
                         stderr_tty=sys.stderr.isatty())
        return cls(enabled=enabled and os.environ.get("TERM") != "dumb")

    def attach(self, counters: Counters,
               rows: Callable[[], Iterable[Row]] | None = None) -> None:
        """Start showing `counters`; `rows` (the run's row stream) gives the total."""
        if not self.enabled or self._live is not None:
            return
        from pracsuite_ingest.progress_live import start_live

        self._count = RowCount(rows) if rows is not None else None
        self._live = start_live(counters, self._count)

    def close(self) -> None:
        """Draw the last state and stop; stdout is free for the summary after this."""
        if self._count is not None:
            self._count.stop()
        if self._live is not None:
            self._live.stop()
            self._live = None
