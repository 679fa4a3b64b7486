"""What the progress display costs: one 300-file run on a pseudo-terminal, shown vs --quiet.

    .venv/bin/python bench/progress_overhead.py [--files 300] [--rounds 5]

Each round runs the CLI twice against the in-process sandbox (fresh state each time),
alternating the order, and records the child's wall time and CPU time (from wait4's
rusage). Prints the medians and the difference as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from e2e import config, make_files, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions


def _run_on_terminal(argv: list[str], cwd: Path) -> tuple[int, float, float]:
    """(exit code, wall s, child CPU s) of `argv` with a pty as stdin/stdout/stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
    env.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
    started = time.perf_counter()
    pid, controller = pty.fork()
    if pid == 0:  # the child
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    while True:  # drain the terminal, or the child blocks on a full buffer
        try:
            if not os.read(controller, 65536):
                break
        except OSError:
            break
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    os.close(controller)
    return os.waitstatus_to_exitcode(status), wall, usage.ru_utime + usage.ru_stime


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"shown": [], "quiet": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with Sandbox(SandboxOptions(validation_delay_s=0.2, record_requests=False)) as sb:
            manifest = write_manifest(root, make_files(root, args.files, ["1", "2", "3"],
                                                       size=20_000))
            for n in range(args.rounds):
                order = ["shown", "quiet"] if n % 2 == 0 else ["quiet", "shown"]
                for label in order:
                    cfg = config(root, sb, log={"level": "info", "format": "auto"},
                                 state={"path": str(root / f"{label}{n}.db")})
                    argv = [sys.executable, "-m", "pracsuite_ingest", "run", "--config",
                            str(cfg), "--manifest", str(manifest)]
                    if label == "quiet":
                        argv.append("--quiet")
                    code, wall, cpu = await asyncio.to_thread(_run_on_terminal, argv, root)
                    assert code == 0, f"{label} run exited {code}"
                    results[label].append((wall, cpu))
    med = {k: {"wall_s": round(statistics.median(w for w, _ in v), 3),
               "cpu_s": round(statistics.median(c for _, c in v), 3)}
           for k, v in results.items()}
    print(json.dumps({
        "files": args.files, "rounds": args.rounds, **med,
        "overhead_wall_s": round(med["shown"]["wall_s"] - med["quiet"]["wall_s"], 3),
        "overhead_cpu_s": round(med["shown"]["cpu_s"] - med["quiet"]["cpu_s"], 3),
    }, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
