"""Measuring a child process (wall, CPU, peak RSS) and a running daemon's CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    """One child process: its exit code, wall seconds, CPU seconds, peak RSS in MB."""

    code: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str
    written_mb: float = 0.0  # bytes the process (and its reaped children) sent to disk
    cancelled_mb: float = 0.0  # of written_mb, dirty pages dropped before they reached
    #                            the disk (a file truncated or deleted first)
    syscall_written_mb: float = 0.0  # bytes it passed to write calls (sockets, tmpfs too)
    syscall_read_mb: float = 0.0  # bytes it read through read calls (page cache too)
    read_calls: int = 0  # its read calls (each a syscall: CPU, whatever the cache holds)


    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["stdout"]
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


# `written_mb` is ru_oublock (512-byte blocks), i.e. /proc/PID/io write_bytes: bytes
# whose page-cache pages the process dirtied on a disk file system (tmpfs counts none).
# cancelled_mb and syscall_*: /proc/PID/io cancelled_write_bytes, wchar, rchar, syscr,
# read from the exited child before it is reaped (waitid with WNOWAIT): what the process
# asked to write and read, before the page cache (sockets and tmpfs included).
# Started through this small launcher: a child's ru_maxrss counts the memory of the
# process it was forked from (until exec), and the benchmark itself holds hundreds of MB
# at times. Forked from an 8 MB interpreter instead, the floor is 8 MB.
_LAUNCHER = """
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawn(argv[0], argv, os.environ)
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
try:
    with open(f"/proc/{pid}/io") as fh:
        io = dict((k, int(v)) for k, v in (line.split(":") for line in fh))
except OSError:  # no /proc/PID/io (a kernel without task I/O accounting)
    io = {}
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(out, "w") as fh:
    json.dump({"code": os.waitstatus_to_exitcode(status), "wall_s": wall,
               "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024,
               "written_mb": ru.ru_oublock * 512 / 1e6,
               "cancelled_mb": io.get("cancelled_write_bytes", 0) / 1e6,
               "syscall_written_mb": io.get("wchar", 0) / 1e6,
               "syscall_read_mb": io.get("rchar", 0) / 1e6,
               "read_calls": io.get("syscr", 0)}, fh)
"""


def run_measured(argv: list[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, log: Path | None = None,
                 wrap: list[str] | None = None) -> Measured:
    """Run `argv` to completion; wall time, CPU and peak RSS of exactly that process.

    `os.wait4` gives the rusage of the one child (RUSAGE_CHILDREN would add up every
    child reaped so far). `wrap` (e.g. a profiler) is put in front and then the
    figures are the wrapper's. `argv[0]` must be a path.
    """
    full = [*(wrap or []), *argv]
    with tempfile.NamedTemporaryFile(suffix=".json") as figures:
        stderr = log.open("wb") if log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.run(
                [sys.executable, "-S", "-c", _LAUNCHER, figures.name, *full], env=env,
                cwd=cwd, stdout=subprocess.PIPE, stderr=stderr, check=False)
        finally:
            if not isinstance(stderr, int):
                stderr.close()
        data = json.loads(Path(figures.name).read_text() or "{}")
    if not data:
        raise RuntimeError(f"could not run {full[0]} (exit {proc.returncode})")
    return Measured(stdout=proc.stdout.decode(errors="replace"), **data)


def cpu_of(pids: list[int]) -> float:
    """CPU seconds used so far by these running processes (threads included)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    return total


class CpuMeter:
    """CPU used by some daemons between `start` and `stop` (the servers, per case)."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_of(p) for name, p in self.pids.items()}

    def stop(self) -> dict[str, float]:
        return {name: round(cpu_of(p) - self._start.get(name, 0.0), 2)
                for name, p in self.pids.items()}
