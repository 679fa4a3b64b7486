"""What `status` prints: a table of the runs on a terminal, JSON for scripts.

The JSON (`--json`, and whenever stdout is not a terminal) is `{"state": PATH, "runs":
[{"run_id", "started_at", "finished_at", "outcome", "stages": {stage: count}}]}`, as the
state file holds it. The table shows each run's items per report status instead.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from pracsuite_ingest.models import Stage, Status
from pracsuite_ingest.report import status_of

COLUMNS = [s.value for s in Status]


def per_status(stages: Mapping[str, int]) -> Counter[str]:
    """A run's item counts per stage, as counts per report status (`pending` for the
    stages of an unfinished item)."""
    out: Counter[str] = Counter()
    for stage, count in stages.items():
        try:
            out[status_of(Stage(stage)).value] += count
        except ValueError:  # a stage this version does not know: still counted
            out[Status.PENDING.value] += count
    return out


def _when(value: Any) -> str:
    return str(value).replace("T", " ") if value else "-"


def runs_table(state_path: str, runs: Sequence[Mapping[str, Any]]) -> Table:
    """One row per run, oldest first: id, started, finished, outcome, items per status."""
    table = Table(title=f"runs in {state_path}", title_justify="left")
    table.add_column("run")
    table.add_column("started (UTC)")
    table.add_column("finished (UTC)")
    table.add_column("outcome")
    table.add_column("items", justify="right")
    for name in COLUMNS:
        table.add_column(name, justify="right")
    for run in runs:
        counts = per_status(run.get("stages") or {})
        table.add_row(
            str(run["run_id"]), _when(run.get("started_at")), _when(run.get("finished_at")),
            str(run.get("outcome") or ""), f"{sum(counts.values()):,}",
            *(f"{counts[n]:,}" if counts[n] else "[dim]0[/]" for n in COLUMNS))
    return table


def print_status(state_path: str, runs: Sequence[Mapping[str, Any]], *, as_json: bool,
                 out: TextIO) -> None:
    """The table on a terminal; the JSON when asked or when `out` is not a terminal."""
    if as_json or not out.isatty():
        print(json.dumps({"state": state_path, "runs": list(runs)}, indent=1), file=out)
        return
    if not runs:
        print(f"{state_path}: no runs yet", file=out)
        return
    Console(file=out).print(runs_table(state_path, runs))
