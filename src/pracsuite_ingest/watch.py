"""What an operator or a scheduler sees of one command, besides the report itself.

A `Watch` goes with one `run` or `reconcile`: it hands the run its trial-run filter,
keeps the counters the progress display and the metrics read, and at the end stops
the display (so stdout is free for the summary) and exports the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pracsuite_ingest.counters import Counters
from pracsuite_ingest.filters import NO_FILTER, RowFilter
from pracsuite_ingest.models import Row
from pracsuite_ingest.progress import TerminalProgress
from pracsuite_ingest.settings import Settings


class Watched(Protocol):
    """What a Watch needs of a run (`pipeline.Run`): its filter, counters and rows."""

    row_filter: RowFilter
    counters: Counters

    def rows(self) -> Iterator[Row]: ...


R = TypeVar("R", bound=Watched)


def _no_progress() -> TerminalProgress:
    return TerminalProgress(enabled=False)


@dataclass
class Watch:
    row_filter: RowFilter = NO_FILTER
    progress: TerminalProgress = field(default_factory=_no_progress)
    shard_label: str | None = None
    counters: Counters = field(default_factory=Counters)
    started: float = field(default_factory=time.monotonic)

    def __call__(self, run: R) -> R:
        """`run`, filtered as asked and counting into this watch; the display starts."""
        run.row_filter = self.row_filter
        run.counters = self.counters
        self.progress.attach(self.counters, run.rows)
        return run

    def reconciling(self) -> Counters:
        """The counters for a `reconcile` command; the display starts."""
        self.progress.attach(self.counters)
        return self.counters

    def stop_display(self) -> None:
        self.progress.close()

    def note(self) -> str | None:
        """A line saying the report is partial, for a trial run; else None."""
        if not self.row_filter.active:
            return None
        return (f"trial run ({self.row_filter.describe()}): rows filtered out are not in "
                "this report; run without --client/--limit for the rest")

    def export_metrics(self, settings: Settings, doc: dict[str, Any], exit_code: int,
                       log: Any) -> None:
        m = settings.metrics
        if not (m.textfile or m.pushgateway_url):
            return
        from pracsuite_ingest import metrics  # prometheus_client: only when metrics are on

        outcome = metrics.outcome_of(
            doc, exit_code=exit_code, bytes_uploaded=self.counters.bytes_sent,
            retries=self.counters.retries, duration_s=time.monotonic() - self.started,
            finished_at=time.time())
        metrics.export(outcome, textfile=m.textfile, pushgateway_url=m.pushgateway_url,
                       job=m.job, shard_label=self.shard_label, log=log)
