"""Where a big poll's memory goes: one patient's files, the worker in this process under
tracemalloc, the sandbox in its own process (its records are not counted).

    .venv/bin/python bench/poll_memory.py --files 10000 [--mode empty] [--top 25]

A thread samples `tracemalloc.get_traced_memory()` every `TICK_S`; each time the
traced memory passes its highest so far by `GROWTH` (and at least once), it takes a
snapshot. At the end it prints, of the highest snapshot, the allocations still alive
grouped by the innermost line of `pracsuite_ingest` (not the sandbox) that made them:
size, count and bytes per file. Slow (tracemalloc with 40 frames): for finding where
the memory goes, not for timing. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

import one_patient

TICK_S = 0.25
GROWTH = 1.05
FRAMES = 40


class Peak:
    """The snapshot taken at the highest traced memory seen."""

    def __init__(self) -> None:
        self.best = 0
        self.snapshot: tracemalloc.Snapshot | None = None
        self.stop = threading.Event()

    def watch(self) -> None:
        while not self.stop.wait(TICK_S):
            current, _ = tracemalloc.get_traced_memory()
            if current > self.best * GROWTH:
                self.snapshot = tracemalloc.take_snapshot()
                self.best = tracemalloc.get_traced_memory()[0]


def ours(frame: tracemalloc.Frame) -> bool:
    name = frame.filename
    return "pracsuite_ingest" in name and "sandbox" not in name


def by_our_line(snapshot: tracemalloc.Snapshot) -> list[tuple[str, int, int]]:
    """(innermost pracsuite_ingest line, bytes, blocks), largest first."""
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for stat in snapshot.statistics("traceback"):
        frame = next((f for f in reversed(stat.traceback) if ours(f)), None)
        where = (f"{frame.filename.rpartition('pracsuite_ingest/')[2]}:{frame.lineno}"
                 if frame else "(outside pracsuite_ingest)")
        sizes[where][0] += stat.size
        sizes[where][1] += stat.count
    return sorted(((k, v[0], v[1]) for k, v in sizes.items()), key=lambda t: -t[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--mode", default="empty", help="sandbox --description-mode")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "bench-one-patient"))
    args = p.parse_args()
    manifest, sandbox, cfg = one_patient.in_process_setup(
        Path(args.workdir), args.files, args.mode, "tracemalloc")
    try:
        from pracsuite_ingest import cli

        os.chdir(manifest.parent)
        tracemalloc.start(FRAMES)
        peak = Peak()
        threading.Thread(target=peak.watch, daemon=True).start()
        started = time.perf_counter()
        code = cli.main(["run", "--config", str(cfg), "--manifest", str(manifest)])
        peak.stop.set()
        wall = time.perf_counter() - started
    finally:
        sandbox.kill()
        sandbox.wait()
    snap = peak.snapshot
    assert snap is not None
    total = sum(s.size for s in snap.statistics("filename"))
    print(f"exit {code}, {wall:.0f} s under tracemalloc; highest traced "
          f"{total / 1e6:.1f} MB ({total / args.files:.0f} B a file); peak "
          f"{tracemalloc.get_traced_memory()[1] / 1e6:.1f} MB")
    print(f"{'where (innermost pracsuite_ingest line)':60} {'MB':>7} {'blocks':>8} {'B/file':>7}")
    for where, size, count in by_our_line(snap)[:args.top]:
        print(f"{where:60} {size / 1e6:7.2f} {count:8d} {size / args.files:7.0f}")
    return 0 if code in (0, None) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
