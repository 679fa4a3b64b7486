"""Trial-run filters: `run --client ID` (repeatable) and `run --limit N`.

A filter narrows the stream of input rows before anything else sees them, so a row
that is filtered out is never checked, sent, stored or reported. Pure code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pracsuite_ingest.models import Row


@dataclass(frozen=True, slots=True)
class RowFilter:
    """Which rows a run takes: those of `clients` (all when empty), the first `limit`.

    `limit` counts the rows that pass the client filter, malformed ones included
    (each of them still gets a report line); 0 means no limit.
    """

    clients: frozenset[str] = frozenset()
    limit: int = 0

    @property
    def active(self) -> bool:
        return bool(self.clients) or self.limit > 0

    def apply(self, rows: Iterable[Row]) -> Iterator[Row]:
        taken = 0
        for row in rows:
            if self.clients and row.client_id not in self.clients:
                continue
            if self.limit and taken >= self.limit:
                return  # stop reading: a trial run on a huge manifest ends early
            taken += 1
            yield row

    def describe(self) -> str:
        """A phrase for the plan and the summary, e.g. 'client 42, 7; first 10 rows'."""
        parts = []
        if self.clients:
            parts.append("client " + ", ".join(sorted(self.clients)))
        if self.limit:
            parts.append(f"first {self.limit} row{'s' if self.limit != 1 else ''}")
        return "; ".join(parts)


NO_FILTER = RowFilter()
