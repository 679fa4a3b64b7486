"""The end-of-run report is written off the event loop (issue 22: 100,000 rows held the
loop for 21 s, no signal handled meanwhile); a second signal stops it at its next row,
and no half report is left. Conditions, never timings."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from pracsuite_ingest import report as rpt
from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.report_task import write_off_loop
from pracsuite_ingest.state import State

ROWS = 3000


def state_of(tmp_path: Path) -> State:
    state = State.open(tmp_path / "state.db")
    state.new_run("r", "2026-12-05T00:00:00+00:00")
    for seq in range(1, ROWS + 1):
        row = Row(seq, "1", f"f/{seq}.pdf", f"{seq}.pdf")
        state.add_item("r", seq, row, LocalFile(row, Path(row.path), 9, "ab" * 32), Stage.SEEN)
    state.commit()
    return state


async def test_the_report_is_written_while_the_loop_runs() -> None:
    # The writer waits for a callback that only a free loop runs: on the loop, it
    # would wait out its 30 s and say so.
    loop = asyncio.get_running_loop()

    def write(*, stop: threading.Event) -> int:
        ran = threading.Event()
        loop.call_soon_threadsafe(ran.set)
        return 0 if ran.wait(30) else 99

    assert await write_off_loop(write) == 0


async def test_a_second_signal_stops_the_report_at_its_next_row(tmp_path: Path) -> None:
    state = state_of(tmp_path)
    started, rows_read = threading.Event(), []
    out = tmp_path / "reports"

    def write(*, stop: threading.Event) -> int:
        doc = rpt.build(state, "r", stop=stop)

        def counted() -> Any:
            for item in doc["items"]:
                rows_read.append(1)
                started.set()
                stop.wait(0.001)  # slow enough for the signal to come mid-way
                yield item

        rpt.write(doc | {"items": _Items(counted)}, out)
        return 0

    try:
        task = asyncio.ensure_future(write_off_loop(write))
        await asyncio.to_thread(started.wait, 30)
        task.cancel()  # what a second SIGTERM does to the run's task
        code = await task
    finally:
        state.close()
    assert code == 130
    assert len(rows_read) < ROWS  # the JSON's pass stopped before its end ...
    assert sorted(out.iterdir()) == []  # ... and left no file, not even a temporary one


class _Items:
    """Report items, read afresh on each pass (as `report.StateItems`)."""

    def __init__(self, make: Any) -> None:
        self._make = make

    def __iter__(self) -> Any:
        return iter(self._make())


async def test_a_report_that_reached_its_end_anyway_keeps_its_exit_code() -> None:
    started = threading.Event()

    def write(*, stop: threading.Event) -> int:
        started.set()
        stop.wait(30)  # told to stop, but it had no row left to stop at
        return 1

    task = asyncio.ensure_future(write_off_loop(write))
    await asyncio.to_thread(started.wait, 30)
    task.cancel()
    assert await task == 1
