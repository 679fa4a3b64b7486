"""What rich draws for the progress display (progress.py): two progress rows and the
status lines. Imported only when the display is on, so that a run off a terminal does
not load rich.progress and rich.live."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich import filesize
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
)
from rich.text import Text

from pracsuite_ingest.progress import (
    RowCount,
    SendRate,
    bytes_left,
    eta_text,
    files_done,
    pace_line,
    reconcile_line,
    send_eta_s,
    status_line,
)

if TYPE_CHECKING:
    from pracsuite_ingest.counters import Counters


def start_live(counters: Counters, count: RowCount | None) -> Live:
    """The display of `counters` on stderr, started (refreshed four times a second)."""
    live = Live(_View(counters, count), console=Console(stderr=True),
                refresh_per_second=4, redirect_stdout=False, redirect_stderr=True)
    live.start()
    return live


class _Rate(ProgressColumn):
    """The recent rate, or the average over the whole task once samples run out."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.speed
        if not speed and task.elapsed:
            speed = task.completed / task.elapsed
        if not speed:
            return Text("")
        text = (f"{filesize.decimal(int(speed))}/s" if self.unit == "bytes"
                else f"{speed:.1f} {self.unit}/s")
        return Text(text, style="progress.data.speed")


class _Eta(ProgressColumn):
    """The send phase's ETA (`progress.eta_text`): the bytes still to send at the recent
    rate of bytes sent (`progress.send_eta_s`); blank once everything is sent."""

    def __init__(self, counters: Counters, count: RowCount | None, rate: SendRate) -> None:
        super().__init__()
        self.c, self.count, self.rate = counters, count, rate

    def render(self, task: Task) -> Text:
        total = int(task.total) if task.total is not None else None
        return Text(eta_text(self.c, total, send_eta_s(self.c, self.count, self.rate)),
                    style="progress.remaining")


class _View:
    """What rich renders on each refresh: two progress rows and two status lines."""

    def __init__(self, counters: Counters, count: RowCount | None) -> None:
        self.c = counters
        self.count = count
        self.rate = SendRate()
        self.files = Progress(
            TextColumn("[bold]files[/]"), BarColumn(), MofNCompleteColumn(), _Rate("files"),
            _Eta(counters, count, self.rate), auto_refresh=False)
        self.bytes = Progress(
            TextColumn("[bold]bytes[/]"), DownloadColumn(), TextColumn("sent"),
            _Rate("bytes"), auto_refresh=False)
        self._files_task = self.files.add_task("files", total=None)
        self._bytes_task = self.bytes.add_task("bytes", total=None)

    def __rich__(self) -> Group:
        c = self.c
        total = self.count.total if self.count is not None else None
        self.rate.sample(time.monotonic(), c.bytes_sent)
        self.files.update(self._files_task, completed=files_done(c), total=total)
        # sent + still to send (as far as the input's sizes tell; None until counted)
        left = bytes_left(c, self.count)
        self.bytes.update(self._bytes_task, completed=c.bytes_sent,
                          total=None if left is None else c.bytes_sent + left)
        lines: list[Any] = [Text(status_line(c), style="cyan")]
        if self.count is not None:  # a `reconcile` command has no files to send
            lines[:0] = [self.files, self.bytes]
        pace = pace_line(c)
        if pace is not None:
            lines.append(Text(pace, style="cyan"))
        rec = reconcile_line(c, time.time())
        if rec is not None:
            lines.append(Text(rec, style="yellow"))
        return Group(*lines)
