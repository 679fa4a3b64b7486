"""What `status` prints: a table of the runs on a terminal, JSON for scripts.

The table is used where it fits the terminal whole (about 130 columns); on a narrower
one (80 columns) each run takes two lines instead: its whole run id, outcome and times,
then its items per status, so nothing is ever cut to `202…`.
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
from rich.measure import Measurement
from rich.table import Table

from pracsuite_ingest.models import Stage, Status
from pracsuite_ingest.plural import counted
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
    """'2026-12-04 19:35:16' (UTC, to the second) from the state's ISO text."""
    return str(value).replace("T", " ").removesuffix("Z")[:19] if value else "-"


def _span(run: Mapping[str, Any]) -> str:
    """'2026-12-04 19:35:16 - 19:37:40', the date once when both fall on it."""
    start, end = _when(run.get("started_at")), _when(run.get("finished_at"))
    if end == "-":
        return f"{start} - (not finished)"
    return f"{start} - {end[11:] if end[:10] == start[:10] else end}"


def counts_text(counts: Mapping[str, int]) -> str:
    """'307 items: validated 290, skipped 10, missing 1' (statuses with none left out)."""
    total = sum(counts.values())
    parts = [f"{name} {counts[name]:,}" for name in COLUMNS if counts.get(name)]
    return counted(total, "item") + (": " + ", ".join(parts) if parts else "")


def runs_lines(state_path: str, runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Two lines per run, for a narrow terminal: id, outcome, times; then the counts."""
    lines = [f"runs in {state_path} (times UTC)"]
    for run in runs:
        lines.append(f"{run['run_id']}  {run.get('outcome') or ''}  {_span(run)}")
        lines.append("    " + counts_text(per_status(run.get("stages") or {})))
    return lines


def runs_table(state_path: str, runs: Sequence[Mapping[str, Any]]) -> Table:
    """One row per run, oldest first: id, started, finished, outcome, items per status."""
    table = Table(title=f"runs in {state_path}", title_justify="left")
    table.add_column("run", no_wrap=True)
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
    console = Console(file=out)
    table = runs_table(state_path, runs)
    wide = console.options.update_width(10_000)  # the width the table needs, uncut
    if Measurement.get(console, wide, table).maximum <= console.width:
        console.print(table)
    else:
        for line in runs_lines(state_path, runs):
            console.print(line, markup=False, highlight=False, overflow="fold",
                          no_wrap=False, crop=False)
