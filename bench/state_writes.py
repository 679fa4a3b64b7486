"""How much the state file costs per item: time and bytes written, by how often it commits.

    python bench/state_writes.py [ITEMS]

Each item goes through the worker's writes (seen, presigned, uploading, its attempt,
uploaded, validated), 20 clients, the uploads of 8 items in flight and 24 awaiting
their record at any time, as a run has them. Committed every K items (the group
commits of state_commits.py: K is the files that reach `uploading` between two
commits: at least files/s x 50 ms in a run), beside a commit per stage change (the
worker before group commits committed twice a file, at `uploading` and `uploaded`:
between the first two lines).
Bytes are what the process handed to write(2) (/proc/self/io `wchar`: the WAL and the
checkpoints into the file), so they do not depend on when the kernel writes back;
bench/scale.py measures the real runs' bytes on disk. WAL mode, synchronous=NORMAL.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.state import State

RUN = "2026-12-04T22-13-05Z-abcd"


def written() -> int:
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("wchar"):
                return int(line.split()[1])
    return 0


def run(items: int, every: int) -> tuple[float, float]:
    """(ms, KB written) per item, committing every `every` items (0: every change)."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("STATE_DIR")) as tmp:
        state = State.open(Path(tmp) / "s.db")
        state.new_run(RUN, "t")
        ids: dict[int, int] = {}

        def then() -> None:
            if every == 0:
                state.commit()

        started, before = time.perf_counter(), written()
        for i in range(items + 24):
            if i < items:
                row = Row(i, str(1 + i % 20), f"/srv/export/c{i % 20}/file-{i:06d}.pdf",
                          f"file-{i:06d}.pdf")
                ids[i] = state.add_item(
                    RUN, i, row, LocalFile(row, Path(row.path), 1024, os.urandom(32).hex()),
                    Stage.SEEN, snapshot_run=RUN, disk_identity=f"2049:{i}:1024:1:1")
                then()
                state.set_stage(ids[i], Stage.PRESIGNED, key=f"temp/{i}/{os.urandom(16).hex()}")
                then()
                state.set_stage(ids[i], Stage.UPLOADING)
                state.attempt(ids[i], 1, new_key=True)
                then()
            if 0 <= i - 8 < items:
                state.set_stage(ids[i - 8], Stage.UPLOADED, uploaded_at=1.0)
                then()
            if 0 <= i - 24 < items:
                state.set_stage(ids[i - 24], Stage.VALIDATED, attachment_id=str(i))
                then()
            if every and (i + 1) % every == 0:
                state.commit()
        state.commit()
        took, size = time.perf_counter() - started, written() - before
        state.close()
    return took / items * 1e3, size / items / 1e3


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(f"{n} items, each: seen, presigned, uploading + attempt, uploaded, validated")
    for every in (0, 1, 3, 10, 30, 100):
        ms, kb = run(n, every)
        label = "a commit per change" if every == 0 else f"a commit every {every} items"
        print(f"{label:<28}: {ms:.3f} ms, {kb:6.2f} KB written per item")
