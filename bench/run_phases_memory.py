"""One patient's run: the worker's memory at the end of the upload phase and at its peak.

    .venv/bin/python bench/run_phases_memory.py --files 10000 [--trace] [--trim]
        [--cache-kb 8192]

The worker runs in this process (the sandbox in its own), `pracsuite-ingest run` as the
CLI runs it. A thread samples the process's RSS (/proc/self/statm) every `TICK_S`;
`UploadPhase.finish` is wrapped to note the RSS, glibc's `mallinfo2` and pymalloc's
arenas at the moment the last upload ended. Printed: RSS at start-up, at the upload
phase's end, its peak (VmHWM) and when (before or after the upload phase's end), and
what of the heap was in use or kept free at the end of the upload phase.

`--trace`: tracemalloc too, with a snapshot at the upload phase's end and one at the
highest traced moment: the top lines of each (innermost pracsuite_ingest line), and
their difference. Slow; RSS figures under --trace are inflated by tracemalloc.
`--trim`: `malloc_trim(0)` right after the upload phase (what the allocator gives
back). `--cache-kb`: `state.CACHE_KB` for this run (the page cache's share).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import one_patient
import poll_memory

TICK_S = 0.05
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * PAGE


def hwm() -> int:
    for text in Path("/proc/self/status").read_text().splitlines():
        if text.startswith("VmHWM:"):
            return int(text.split()[1]) * 1024
    return 0


class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


LIBC = ctypes.CDLL("libc.so.6")
LIBC.mallinfo2.restype = MallInfo2


def heap() -> dict[str, float]:
    m = LIBC.mallinfo2()
    return {"malloc_in_use_mb": m.uordblks / 1e6, "malloc_free_kept_mb": m.fordblks / 1e6,
            "malloc_mmap_mb": m.hblkhd / 1e6}


def pymalloc() -> dict[str, float]:
    """pymalloc's arenas (256 KiB each) from sys._debugmallocstats (stderr)."""
    r, w = os.pipe()
    saved = os.dup(2)
    os.dup2(w, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(w)
        os.close(saved)
    chunks = []
    while data := os.read(r, 65536):
        chunks.append(data)
    os.close(r)
    out: dict[str, float] = {}
    for text in b"".join(chunks).decode().splitlines():
        for key in ("# arenas allocated current", "# bytes in allocated blocks",
                    "# bytes in available blocks", "# bytes lost to pool headers",
                    "# bytes lost to quantization", "# bytes lost to arena alignment"):
            if text.startswith(key):
                out[key.lstrip("# ")] = float(text.split("=")[1].replace(",", ""))
    return out


class Sampler:
    def __init__(self) -> None:
        self.peak = 0
        self.peak_at = 0.0
        self.stop = threading.Event()
        self.t0 = time.perf_counter()

    def watch(self) -> None:
        while not self.stop.wait(TICK_S):
            now = rss()
            if now > self.peak:
                self.peak, self.peak_at = now, time.perf_counter() - self.t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--mode", default="empty")
    p.add_argument("--trace", action="store_true")
    p.add_argument("--trim", action="store_true")
    p.add_argument("--gc", action="store_true", help="gc.collect() at the upload end")
    p.add_argument("--cache-kb", type=int, default=0)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "bench-one-patient"))
    args = p.parse_args()
    manifest, sandbox, cfg = one_patient.in_process_setup(
        Path(args.workdir), args.files, args.mode, "phases")
    notes: dict[str, Any] = {}
    try:
        from pracsuite_ingest import cli, state
        from pracsuite_ingest.reconcile import reconciler

        if args.cache_kb:
            state.CACHE_KB = args.cache_kb
        finish = reconciler.UploadPhase.finish
        sampler = Sampler()
        peak = poll_memory.Peak()

        def noted_finish(self: Any) -> None:
            if args.gc:
                gc.collect()
            if args.trim:
                notes["before_trim_mb"] = rss() / 1e6
                LIBC.malloc_trim(0)
            notes["at_s"] = time.perf_counter() - sampler.t0
            notes["rss_mb"] = rss() / 1e6
            notes["hwm_mb"] = hwm() / 1e6
            notes.update(heap())
            notes.update(pymalloc())
            if args.trace:
                notes["snapshot"] = tracemalloc.take_snapshot()
                notes["traced_mb"] = tracemalloc.get_traced_memory()[0] / 1e6
            finish(self)

        reconciler.UploadPhase.finish = noted_finish  # type: ignore[method-assign]
        os.chdir(manifest.parent)
        notes["start_rss_mb"] = rss() / 1e6
        if args.trace:
            tracemalloc.start(poll_memory.FRAMES)
            threading.Thread(target=peak.watch, daemon=True).start()
        threading.Thread(target=sampler.watch, daemon=True).start()
        code = cli.main(["run", "--config", str(cfg), "--manifest", str(manifest)])
        sampler.stop.set()
        peak.stop.set()
        wall = time.perf_counter() - sampler.t0
        end = {"rss_mb": rss() / 1e6, **heap(), **pymalloc()}
    finally:
        sandbox.kill()
        sandbox.wait()
    n = args.files
    print(f"{n} files, exit {code}, wall {wall:.0f} s, load {os.getloadavg()}, "
          f"cache_kb {state.CACHE_KB}, trim {args.trim}, gc {args.gc}, trace {args.trace}")
    print(f"RSS at start {notes['start_rss_mb']:.1f} MB; at the upload phase's end "
          f"({notes.get('at_s', 0):.0f} s) {notes.get('rss_mb', 0):.1f} MB "
          f"(HWM then {notes.get('hwm_mb', 0):.1f}); peak {hwm() / 1e6:.1f} MB, "
          f"sampled peak {sampler.peak / 1e6:.1f} MB at {sampler.peak_at:.0f} s; "
          f"at exit {end['rss_mb']:.1f} MB")
    if "before_trim_mb" in notes:
        print(f"malloc_trim at the upload end: {notes['before_trim_mb']:.1f} -> "
              f"{notes['rss_mb']:.1f} MB")
    for when, d in (("upload end", notes), ("exit", end)):
        print(f"{when}: " + ", ".join(f"{k} {v / 1e6 if 'bytes' in k else v:.1f}"
                                     for k, v in d.items()
                                     if k.startswith(("malloc", "arenas", "bytes"))))
    if args.trace and "snapshot" in notes and peak.snapshot is not None:
        at_end = notes["snapshot"]
        print(f"traced at the upload end {notes['traced_mb']:.1f} MB, at the peak "
              f"{peak.best / 1e6:.1f} MB")
        print("-- at the upload phase's end")
        for where, size, count in poll_memory.by_our_line(at_end)[:args.top]:
            print(f"{where:60} {size / 1e6:7.2f} {count:8d} {size / n:7.0f}")
        print("-- at the peak")
        for where, size, count in poll_memory.by_our_line(peak.snapshot)[:args.top]:
            print(f"{where:60} {size / 1e6:7.2f} {count:8d} {size / n:7.0f}")
    return 0 if code in (0, None) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
