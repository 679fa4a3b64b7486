"""How much the state file costs per item, as the worker writes it and as baselines.

    python bench/state_writes.py [ITEMS]

Prints microseconds per stage change and per item (5 changes: seen, presigned,
uploading, uploaded, validated), in WAL mode with synchronous=NORMAL as the worker
runs: committed at `uploading` and `uploaded` (the others ride along, state.py),
beside a commit per change (the worker before that change), and synchronous=FULL (an
fsync per commit).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from pracsuite_ingest import state as state_mod
from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.state import State

STAGES = (Stage.PRESIGNED, Stage.UPLOADING, Stage.UPLOADED, Stage.VALIDATED)
AS_THE_WORKER = state_mod.DURABLE_AT_ONCE


def run(items: int, synchronous: str, *, commit_each: bool = False) -> float:
    state_mod.DURABLE_AT_ONCE = frozenset(Stage) if commit_each else AS_THE_WORKER
    with tempfile.TemporaryDirectory() as tmp:
        state = State.open(Path(tmp) / "s.db")
        state._db.execute(f"PRAGMA synchronous={synchronous}")
        state.new_run("r", "t")
        started = time.perf_counter()
        for i in range(items):
            row = Row(i, str(i % 10), f"/f/{i}.pdf", f"{i}.pdf")
            item = state.add_item("r", i, row, LocalFile(row, Path(row.path), 1, f"{i:064x}"),
                                  Stage.SEEN, snapshot_run="r")
            for stage in STAGES:
                state.set_stage(item, stage, key=f"temp/{i}") if stage is not Stage.VALIDATED \
                    else state.set_stage(item, stage, attachment_id=str(i))
        elapsed = time.perf_counter() - started
        state.close()
    return elapsed


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    for mode, each, label in (("NORMAL", False, "as the worker writes"),
                              ("NORMAL", True, "a commit per change"),
                              ("FULL", True, "a commit per change")):
        s = run(n, mode, commit_each=each)
        print(f"synchronous={mode:6} {label:<21}: {n} items, {s:.2f} s, "
              f"{s / n * 1e3:.2f} ms per item, {s / (n * 5) * 1e6:.0f} us per stage change")
