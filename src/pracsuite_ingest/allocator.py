"""glibc's malloc: a big block freed goes back to the system (issue 22).

A poll of one patient's 100,000 records grows and drops containers of hundreds of KB to
a few MB (a list of every record's id, the `presign_url` names' dict, sets and arrays
of every upload). glibc maps a block of at least `M_MMAP_THRESHOLD` (128 KiB) on its
own, and unmaps it when freed; but the first such block freed raises the threshold to
its own size (up to 32 MiB), so every later block of that size is carved from the heap
instead, and a freed one stays there as a hole the process keeps (the heap is only
given back from its top). Measured with `bench/run_phases_memory.py` (30,000 files of
one patient, same machine): glibc kept 14.4 MB free at the end against 10.1 MB at
10,000 files; with the threshold fixed at 128 KiB, 7.4 MB, and the run's peak RSS
87.2 -> 82.1 MB; 100,000 files, the worker's peak 108.4 -> 96.6 MB
(bench/results/2026-12-05-one-patient-memory.md). Fixing the threshold (any
`mallopt` of it) turns that raising off.

Python's own allocator (pymalloc) serves blocks up to 512 bytes from its arenas and is
not affected. A libc without `mallopt`, or whose `mallopt` refuses it (musl's answers
0): nothing is done.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's default, kept fixed


def keep_big_blocks_mapped(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes for this process; False where
    this libc has no `mallopt` or refuses (then nothing changed)."""
    try:  # the process's own symbols, libc's among them (find_library would spawn ldconfig)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
