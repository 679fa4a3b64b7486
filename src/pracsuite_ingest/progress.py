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
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from pracsuite_ingest import MAX_FILE_BYTES
from pracsuite_ingest.models import Row, Stage
from pracsuite_ingest.plural import counted

if TYPE_CHECKING:
    from rich.live import Live

    from pracsuite_ingest.counters import Counters
    from pracsuite_ingest.progress_log import ProgressLog

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
            f"{counted(p.calls, 'call')} · {p.throttled:,} throttled{share}")


def reconcile_line(c: Counters, now: float) -> str | None:
    """The reconcile phase, or None outside it: how many uploads are awaited, how many
    PracSuite validated so far, and when the worker gives up waiting (local HH:MM): a
    deadline, not an estimate. Once the phase is over, its outcome."""
    if not c.reconcile_until:
        return None
    validated = c.by_stage.get(Stage.VALIDATED, 0)
    if c.reconcile_end == "stopped":
        return (f"reconcile: stopped: {validated} validated, {c.awaiting} still awaited "
                "(the next run asks PracSuite again)")
    if c.reconcile_end:
        if not c.awaiting:
            if not validated:
                return "reconcile: done: no upload to wait for"
            return f"reconcile: done: every upload validated ({validated} this run)"
        return (f"reconcile: done: {validated} validated, {c.awaiting} not shown by PracSuite "
                "in time (missing: `reconcile` looks again)")
    head = f"reconcile: {c.awaiting} awaited · {validated} validated so far · "
    if now >= c.reconcile_until:  # never a "gives up at" time already gone
        return head + "deadline passed: the last polls are finishing"
    gives_up = datetime.fromtimestamp(c.reconcile_until).strftime("%H:%M")
    return head + f"gives up at {gives_up} if PracSuite has not shown them by then"


RATE_WINDOW_S = 20.0  # the send rate the ETA uses: bytes sent over about this long


class SendRate:
    """The recent rate of bytes actually sent (`Counters.bytes_sent`), from samples the
    display takes; a file skipped or carried adds no byte, so a resume that skips most
    rows does not read as fast."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, now: float, bytes_sent: int) -> None:
        self._samples.append((now, bytes_sent))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def bytes_per_s(self) -> float | None:
        """Bytes per second over the window; None before any byte went (nothing to go by)."""
        if len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        if t1 <= t0 or b1 <= b0:
            return None
        return (b1 - b0) / (t1 - t0)


def bytes_left(c: Counters, count: RowCount | None) -> int | None:
    """Bytes still to send, as far as known: the admitted files' bytes not yet sent, plus
    the sizes of the rows not read yet (`RowCount`'s look at the input); None until the
    count is done."""
    if count is None or count.total is None:
        return None
    return max(0, c.bytes_to_send - c.bytes_sent) + count.bytes_after(c.rows)


def send_eta_s(c: Counters, count: RowCount | None, rate: SendRate) -> float | None:
    """Seconds until every byte still to send has gone, at the recent rate."""
    left, speed = bytes_left(c, count), rate.bytes_per_s()
    if left is None or not speed:
        return None
    return left / speed


def progress_fields(c: Counters, count: RowCount | None, rate: SendRate,
                    now: float) -> dict[str, object]:
    """What one "progress" log line carries (progress_log.py): files and bytes done and
    total (None while unknown), validated so far, the API's pace, the send ETA."""
    total = count.total if count is not None else None
    left = bytes_left(c, count)
    eta = send_eta_s(c, count, rate)
    sending = not c.reconcile_until and (total is None or files_done(c) < total)
    fields: dict[str, object] = {
        "phase": "send" if sending else "reconcile",
        "files_done": files_done(c), "files_total": total,
        "bytes_sent": c.bytes_sent, "bytes_total": None if left is None else c.bytes_sent + left,
        "validated": c.by_stage.get(Stage.VALIDATED, 0),
        "awaiting_validation": awaiting_validation(c),
        "eta_s": round(eta) if eta is not None and sending else None,
    }
    if c.pace is not None:
        p = c.pace()
        fields["api"] = {"requests_per_second": round(p.requests_per_second, 2),
                         "mode": p.mode, "calls": p.calls, "throttled": p.throttled}
    if c.reconcile_until and not c.reconcile_end:
        fields["reconcile_deadline_passed"] = now >= c.reconcile_until
    return fields


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
    """Counts the input rows in a daemon thread, so the bar can show a total, and
    their files' sizes (one `stat` each, no hashing), so the bytes row has one.

    The count reads the same filtered rows as the run, in its order; a run that ends
    first just stops looking at it. `total` is None until it is done. The running sum
    of sizes is kept per row (8 bytes a row, on a terminal only) for `bytes_after`.
    """

    def __init__(self, rows: Callable[[], Iterable[Row]]) -> None:
        self.total: int | None = None
        self._sums = array("Q")  # bytes of rows 1..n, n = index + 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._count, args=(rows,), daemon=True,
                                        name="pracsuite-row-count")
        self._thread.start()

    def _count(self, rows: Callable[[], Iterable[Row]]) -> None:
        n = size = 0
        try:
            for row in rows():
                if self._stop.is_set():
                    return
                n += 1
                size += _size_of(row)
                self._sums.append(size)
        except Exception:  # the run itself reports a bad input
            return
        self.total = n

    def bytes_after(self, rows_read: int) -> int:
        """The sizes of the rows after the first `rows_read` (0 before the count is done)."""
        if self.total is None or not self._sums:
            return 0
        before = self._sums[rows_read - 1] if 0 < rows_read <= len(self._sums) else (
            self._sums[-1] if rows_read > len(self._sums) else 0)
        return self._sums[-1] - before

    def stop(self) -> None:
        self._stop.set()


def _size_of(row: Row) -> int:
    """A row's file size for the progress total (0 for a problem row or a file that
    cannot be seen, or one over the limit: neither will be sent)."""
    if row.problem or not row.path:
        return 0
    try:
        size = os.stat(row.path).st_size  # noqa: PTH116 - a Path per row costs more than the stat
    except (OSError, ValueError):
        return 0
    return size if size <= MAX_FILE_BYTES else 0


class TerminalProgress:
    """The display for one command; every method is a no-op when it is off. Where it is
    off and `log_interval_s` is given (a scheduler's log), progress goes to the log
    instead: one "progress" line that often (progress_log.py)."""

    def __init__(self, *, enabled: bool, log_interval_s: float | None = None) -> None:
        self.enabled = enabled
        self.log_interval_s = None if enabled else log_interval_s
        self._live: Live | None = None
        self._count: RowCount | None = None
        self._log: ProgressLog | None = None

    @classmethod
    def for_terminal(cls, *, quiet: bool, log_format: str,
                     log_interval_s: float | None = None) -> TerminalProgress:
        enabled = wanted(quiet=quiet, log_format=log_format, stdout_tty=sys.stdout.isatty(),
                         stderr_tty=sys.stderr.isatty())
        return cls(enabled=enabled and os.environ.get("TERM") != "dumb",
                   log_interval_s=log_interval_s)

    def attach(self, counters: Counters,
               rows: Callable[[], Iterable[Row]] | None = None) -> None:
        """Start showing `counters`; `rows` (the run's row stream) gives the total."""
        if not self.enabled and self.log_interval_s and self._log is None:
            from pracsuite_ingest.progress_log import ProgressLog

            self._log = ProgressLog(self.log_interval_s)
            self._log.attach(counters, rows)
        if not self.enabled or self._live is not None:
            return
        from pracsuite_ingest.progress_live import start_live

        self._count = RowCount(rows) if rows is not None else None
        self._live = start_live(counters, self._count)

    def close(self) -> None:
        """Draw the last state and stop; stdout is free for the summary after this."""
        if self._count is not None:
            self._count.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._live is not None:
            self._live.stop()
            self._live = None
