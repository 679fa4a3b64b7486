"""Live numbers of a run, for the summary, the progress display and metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pracsuite_ingest.rate_gate import Pace


@dataclass
class Counters:
    """Live numbers for the summary and the progress display."""

    rows: int = 0
    bytes_sent: int = 0
    in_flight: int = 0
    retries: int = 0
    by_stage: dict[str, int] = field(default_factory=dict)  # where items ended each phase
    presigning: int = 0
    bytes_to_send: int = 0  # sizes of the files admitted for upload so far
    awaiting: int = 0  # during reconcile: uploads not yet shown by PracSuite
    reconcile_until: float = 0.0  # wall-clock deadline of the reconcile phase (0: not yet)
    pace: Callable[[], Pace] | None = None  # the API's calls, 429s and rate, read live
    reconcile_end: str = ""  # "done" or "stopped" once the reconcile phase is over
    skipped_why: dict[str, int] = field(default_factory=dict)  # skipped items per reason

    def tally(self, stage: str, n: int = 1) -> None:
        self.by_stage[stage] = self.by_stage.get(stage, 0) + n

    def skipped(self, stage: str, reason: str) -> None:
        """An item skipped (counted at `stage`) for `reason`."""
        self.tally(stage)
        self.skipped_why[reason] = self.skipped_why.get(reason, 0) + 1
