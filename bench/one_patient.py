"""One patient with many files: the real CLI against the sandbox, every file one client's.

    make bench-one-patient                 # or: .venv/bin/python bench/one_patient.py
    .venv/bin/python bench/one_patient.py --files 2500,10000 --modes empty,file_name
    .venv/bin/python bench/one_patient.py --files 100000 --modes empty --sigterm
    .venv/bin/python bench/one_patient.py --before main   # that revision's code too

Issue 22: a patient's records were matched to its uploads in quadratic time on the
event loop. Each case is `pracsuite-ingest run` (through `bench/loop_watch.py`, which
times the event loop from a thread) as a child process, against a sandbox of one client
(a separate process, validation delay 0), `reconcile.verify` at its default, the
records' description empty (`--description-mode empty`: each name read through
`presign_url`) or the file name (`file_name`). Files are 64 random bytes. Printed per
case: exit code, wall, CPU ms per file, peak RSS (the child's ru_maxrss), the longest
event-loop stall, how many files were validated, and with `--sigterm` a second run of
the case that gets SIGTERM `--sigterm-after` seconds into its first poll of at least
half the files: the seconds from the signal to the process's exit, whether the report
was written and every row has one status. `--timeout` bounds a run (then it is killed,
and said). Writes bench/results/<time>-one-patient.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import scale
from servers import PYTHON, REPO

HERE = Path(__file__).resolve().parent
SIZE = 64


def make_files(root: Path, count: int) -> Path:
    """`count` files of SIZE random bytes, all of client 1, and their manifest (kept)."""
    manifest = root / f"manifest-{count}.csv"
    if manifest.is_file():
        return manifest
    folder = root / "files"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["client_id,path"]
    for i in range(count):
        path = folder / f"{i:06d} scan.pdf"
        if not path.is_file():
            path.write_bytes(os.urandom(SIZE))
        lines.append(f"1,files/{i:06d} scan.pdf")
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(manifest)
    return manifest


def in_process_setup(work: Path, files: int, mode: str, tag: str
                     ) -> tuple[Path, subprocess.Popen[str], Path]:
    """For a bench that runs the CLI in its own process: the files and manifest, a fresh
    output folder `<files>-<mode>-<tag>` for the state and reports, a one-patient
    sandbox (the caller kills it), the config pointed at both, and no PRACSUITE_*
    variable left in this environment."""
    manifest = make_files(work / "input", files)
    out = scale.fresh(work / f"{files}-{mode}-{tag}")
    sandbox, keys = start_sandbox(mode)
    try:
        cfg = scale.config(out / "config.toml", out, keys)
    except BaseException:
        sandbox.kill()
        raise
    for k in [k for k in os.environ if k.startswith("PRACSUITE")]:
        del os.environ[k]
    return manifest, sandbox, cfg


def start_sandbox(mode: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    sandbox = subprocess.Popen(
        [PYTHON, "-m", "pracsuite_ingest", "sandbox", "--port", "0", "--clients", "1",
         "--validation-delay", "0", "--description-mode", mode], env=scale.env_for(None),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert sandbox.stdout is not None
    lines = [sandbox.stdout.readline() for _ in range(4)]
    if lines[0].strip() != "[api]":
        sandbox.kill()
        raise RuntimeError(f"the sandbox did not start: {lines!r}")
    keys = {k.strip(): json.loads(v) for k, _, v in (x.partition("=") for x in lines[1:])}
    return sandbox, keys


class Child:
    """The worker, spawned (not forked: ru_maxrss would count this process) and reaped
    with wait4 in a thread, so that the benchmark can signal it meanwhile."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.argv = argv
        self.started = time.perf_counter()
        with log.open("wb") as err, open(os.devnull, "wb") as null:
            actions = [(os.POSIX_SPAWN_DUP2, null.fileno(), 1),
                       (os.POSIX_SPAWN_DUP2, err.fileno(), 2)]
            old = Path.cwd()
            os.chdir(cwd)
            try:
                self.pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
            finally:
                os.chdir(old)
        self.result: dict[str, Any] = {}
        self.exited = threading.Event()
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        _, status, ru = os.wait4(self.pid, 0)
        self.ended = time.perf_counter()
        self.result = {"code": os.waitstatus_to_exitcode(status),
                       "wall_s": round(self.ended - self.started, 2),
                       "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
                       "peak_rss_mb": round(ru.ru_maxrss / 1024, 1)}
        self.exited.set()

    def wait(self, timeout: float) -> bool:
        if self.exited.wait(timeout):
            return True
        os.kill(self.pid, signal.SIGKILL)
        self.exited.wait()
        return False


def one_case(work: Path, code: Path | None, n: int, mode: str, *, sigterm: float | None,
             timeout: float, resume: bool = False, label: str = "") -> dict[str, Any]:
    manifest = make_files(work / "input", n)
    tag = f"{n}-{mode}-{label.replace(' ', '-') or 'checkout'}"
    out = scale.fresh(work / (tag + ("-sigterm" if sigterm is not None else "")))
    shm = scale.SHM / out.name
    sandbox, keys = start_sandbox(mode)
    try:
        cfg = scale.config(out / "config.toml", out, keys)
        env = scale.env_for(code)
        env["PYTHONPATH"] = os.pathsep.join(
            [p for p in (env.get("PYTHONPATH"), str(HERE)) if p])
        env |= {"BENCH_LOOP_WATCH_OUT": str(shm / "loop.json"),
                "BENCH_BIG_POLL": str(max(n // 2, 1)),
                "BENCH_BIG_POLL_MARK": str(shm / "big-poll")}
        child = Child([PYTHON, str(HERE / "loop_watch.py"), "run", "--config", str(cfg),
                       "--manifest", str(manifest)], env, manifest.parent, shm / "worker.log")
        signalled = None
        if sigterm is not None:
            signalled = _signal_in_big_poll(child, shm / "big-poll", sigterm, timeout)
        finished = child.wait(max(timeout - (time.perf_counter() - child.started), 1.0))
        r = _figures(child, finished, n, shm, signalled)
        if resume and signalled is not None:  # the same command again: it reconciles
            env["BENCH_LOOP_WATCH_OUT"] = str(shm / "loop-resumed.json")
            again = Child(child.argv, env, manifest.parent, shm / "worker-resumed.log")
            r["resumed"] = _figures(again, again.wait(timeout), n, shm, None,
                                    loop=shm / "loop-resumed.json")
    finally:
        sandbox.kill()  # nothing of it is measured
        sandbox.wait()
    return r


def _figures(child: Child, finished: bool, n: int, shm: Path, signalled: float | None,
             loop: Path | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {**child.result, "killed_at_timeout": not finished}
    r["cpu_ms_per_file"] = round(r["cpu_s"] / n * 1e3, 3)
    loop = loop or shm / "loop.json"
    r |= json.loads(loop.read_text()) if loop.is_file() else {"loop": "not written"}
    phases = r.get("max_stall_by_phase_ms", {})
    r["max_stall_in_run_ms"] = phases.get("run", 0)
    r["max_stall_cpu_in_run_ms"] = r.get("max_stall_cpu_by_phase_ms", {}).get("run", 0)
    if signalled is not None:
        r["sigterm_to_exit_s"] = round(child.ended - signalled, 2)
    report = shm / "reports" / "latest.json"
    if report.is_file():
        doc = json.loads(report.read_text())
        r["summary"] = doc["summary"]
    else:
        r["summary"] = "no report"
        r["log_tail"] = (shm / "worker.log").read_text(errors="replace")[-600:]
    return r


def _signal_in_big_poll(child: Child, mark: Path, after: float, timeout: float) -> float | None:
    """SIGTERM `after` seconds into the first big poll; when it was sent (None: never)."""
    while not mark.exists():
        if child.exited.wait(0.2) or time.perf_counter() - child.started > timeout:
            return None
    time.sleep(after)
    if child.exited.is_set():
        return None
    os.kill(child.pid, signal.SIGTERM)
    return time.perf_counter()


def line(n: int, mode: str, label: str, r: dict[str, Any]) -> str:
    s = r["summary"]
    valid = s.get("validated", "?") if isinstance(s, dict) else s
    pending = s.get("pending", "?") if isinstance(s, dict) else ""
    text = (f"{n:>7,} {mode:<9} {label:<20} exit {r['code']:>3}  wall {r['wall_s']:7.1f} s  "
            f"cpu {r['cpu_ms_per_file']:6.2f} ms/file  peak {r['peak_rss_mb']:6.1f} MB  "
            f"stall max: run {r['max_stall_in_run_ms']:6.0f} ms "
            f"(loop CPU {r['max_stall_cpu_in_run_ms']:5.0f}), all "
            f"{r.get('max_stall_ms', float('nan')):6.0f} (>100 ms: "
            f"{r.get('stalls_over_100ms', '?')})  validated {valid} pending {pending}")
    if "sigterm_to_exit_s" in r:
        text += f"  SIGTERM->exit {r['sigterm_to_exit_s']} s"
    if r["killed_at_timeout"]:
        text += "  KILLED at the timeout"
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", default="2500,10000", help="file counts (all one patient's)")
    p.add_argument("--modes", default="empty,file_name", help="sandbox --description-mode")
    p.add_argument("--sigterm", action="store_true",
                   help="also a run per case stopped by SIGTERM in its first big poll")
    p.add_argument("--sigterm-after", type=float, default=1.0)
    p.add_argument("--no-full", action="store_true", help="only the SIGTERM runs")
    p.add_argument("--resume", action="store_true",
                   help="after a SIGTERM run, the same command again (it reconciles)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--before", help="a git revision to run beside this checkout's code")
    p.add_argument("--only-before", action="store_true")
    p.add_argument("--at", help="run this git revision's code (extracted) instead of the "
                   "checkout's: the checkout can change meanwhile")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "bench-one-patient"))
    args = p.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    codes: list[tuple[str, Path | None]] = []
    if args.before:
        codes.append((f"before {args.before}", scale.checkout(args.before, work)))
    if args.at:
        codes.append((f"at {args.at}", scale.checkout(args.at, work)))
    elif not args.only_before:
        codes.append(("this checkout", None))
    doc, results = scale.results_doc(args.before, file_bytes=SIZE)
    out = REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%dT%H-%M-%SZ}-one-patient.json"
    runs = ([] if args.no_full else [None]) + ([args.sigterm_after] if args.sigterm else [])
    for n in scale.sizes(args.files):
        for mode in args.modes.split(","):
            for sigterm in runs:
                for label, code in codes:
                    r = one_case(work, code, n, mode, sigterm=sigterm, timeout=args.timeout,
                                 resume=args.resume, label=label)
                    r["load_after"] = [round(x, 1) for x in os.getloadavg()]
                    case = f"{n} {mode}" + (" sigterm" if sigterm is not None else "")
                    results.setdefault(case, {})[label] = r
                    print(line(n, mode, label, r), flush=True)
                    if "resumed" in r:
                        print(line(n, mode, label + " resumed", r["resumed"]), flush=True)
                    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
