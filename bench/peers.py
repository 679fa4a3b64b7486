"""What the worker is compared with: naive, aws-cli, rclone and the limits; and, run as
a script (`make bench-peers`), CPU milliseconds per file of rclone, aws-cli and the
worker side by side (issue 23).

    make bench-peers           # or: .venv/bin/python bench/peers.py [--files 2000]
    .venv/bin/python bench/peers.py --tools worker --variant base=/tmp/a/src \
        --variant fix=/tmp/b/src            # A/B of source trees, interleaved rounds
    .venv/bin/python bench/peers.py --tools worker --profile   # + py-spy raw stacks

On loopback, against the radosgw of RADOSGW_ENDPOINT (or the bench's own, as
bench/run.py): `--files` x 16 KB (10 clients) sent by rclone (Debian's, `copy
--transfers 8`, configured by RCLONE_CONFIG_* variables), aws-cli (`s3 cp
--recursive`, from bench/.venv) and the worker (`run`, against the sandbox presigning
for the same radosgw, defaults 8 / 4, once per `--verify` mode). CPU is the child's own
user + sys (os.wait4). The worker's *upload leg* is the window the other benchmarks call
its upload phase (state file: first transition to last `uploaded`), with its CPU from
/proc/<pid>/stat sampled every 20 ms; its *whole run* is the process from exec to exit.
rclone and aws-cli are upload legs only (no presign, no PracSuite). Each tool runs
`--rounds` times in a rotated order; the median round is printed. Writes
bench/results/<time>-peers.json. Not part of the test suite.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from measure import CpuMeter, run_measured
from servers import BUCKET, PYTHON, REPO, Radosgw

from pracsuite_ingest.sandbox.sigv4 import Credentials, presign_post

BENCH_VENV = REPO / "bench" / ".venv"
BENCH_TOOLS = ("awscli>=1.33", "py-spy>=0.3")


def bench_tool(name: str) -> Path:
    """A tool from the benchmark's own venv (bench/.venv), installed on first use.

    aws-cli pins botocore exactly; kept apart, it cannot move the project's boto3.
    """
    path = BENCH_VENV / "bin" / name
    if not path.exists():
        if not (BENCH_VENV / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", *BENCH_TOOLS],
                       check=True)
    return path


def manifest_rows(manifest: Path) -> list[tuple[Path, str]]:
    with manifest.open(newline="", encoding="utf-8") as fh:
        return [(manifest.parent / r["path"], r.get("file_name") or Path(r["path"]).name)
                for r in csv.DictReader(fh)]


def naive(base_url: str, vendor: str, practice: str, manifest: Path) -> dict[str, Any]:
    """bench/naive.py as a child process: one file at a time, then poll."""
    m = run_measured([PYTHON, str(REPO / "bench" / "naive.py"), base_url, vendor, practice,
                      str(manifest)])
    if m.code != 0:
        raise RuntimeError(f"naive failed ({m.code}): {m.stdout[-500:]}")
    inner = json.loads(m.stdout.strip().splitlines()[-1])
    return {**m.as_dict(), "upload_s": round(inner["upload_s"], 3)}


def awscli(rgw: Radosgw, files_dir: Path, prefix: str) -> dict[str, Any]:
    """`aws s3 cp --recursive` of the same files to the same bucket, default settings."""
    aws = bench_tool("aws")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PRACSUITE"))}
    env.update(AWS_ACCESS_KEY_ID=rgw.access_key, AWS_SECRET_ACCESS_KEY=rgw.secret_key,
               AWS_DEFAULT_REGION=rgw.region, AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    m = run_measured([str(aws), "s3", "cp", "--recursive", "--only-show-errors",
                      "--endpoint-url", rgw.endpoint, str(files_dir),
                      f"s3://{BUCKET}/{prefix}/"], env=env)
    if m.code != 0:
        raise RuntimeError(f"aws s3 cp failed ({m.code}): {m.stdout[-500:]}")
    return m.as_dict()


def limit_posts(rgw: Radosgw, keys: tuple[str, str, str | None], manifest: Path,
                concurrency: int, prefix: str) -> dict[str, Any]:
    """Concurrent raw presigned POSTs of the same bytes, presigned and read beforehand."""
    rows = manifest_rows(manifest)
    creds = Credentials(*keys)
    now = datetime.now(UTC)
    forms = []
    for i, (path, name) in enumerate(rows):
        url, fields = presign_post(url=f"{rgw.endpoint}/{BUCKET}", bucket=BUCKET,
                                   key=f"{prefix}/{i}/{name}", creds=creds, region=rgw.region,
                                   now=now, expires_in_s=3600, max_bytes=104_857_600)
        forms.append((url, fields, path.read_bytes(), name))
    total = sum(len(f[2]) for f in forms)
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = asyncio.run(_post_all(forms, concurrency))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"wall_s": round(wall, 3), "files": len(forms), "bytes": total,
            "concurrency": concurrency, "cpu_s": round(cpu, 2)}


async def _post_all(forms: list[tuple[str, list[tuple[str, str]], bytes, str]],
                    concurrency: int) -> float:
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(url: str, fields: list[tuple[str, str]], body: bytes, name: str) -> None:
            async with slots:
                form = aiohttp.FormData(quote_fields=False)
                for k, v in fields:
                    form.add_field(k, v)
                form.add_field("file", body, filename=name,
                               content_type="application/octet-stream")
                async with session.post(url, data=form) as resp:
                    if resp.status != 204:
                        raise RuntimeError(f"limit POST: {resp.status} {await resp.text()}")

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for f in forms:
                tg.create_task(post(*f))
        return time.perf_counter() - started


def disk_read(manifest: Path) -> dict[str, Any]:
    """A sequential read of every file in 1 MiB chunks (page cache as the worker finds it)."""
    rows = manifest_rows(manifest)
    total = 0
    started = time.perf_counter()
    for path, _ in rows:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                total += len(chunk)
    return {"wall_s": round(time.perf_counter() - started, 4), "files": len(rows),
            "bytes": total}


# ------------------------------------------------------------ make bench-peers (issue 23)
RESULTS = REPO / "bench" / "results"
SAMPLE_S = 0.02
_TICKS = os.sysconf("SC_CLK_TCK")


def rclone(rgw: Radosgw, files_dir: Path, prefix: str, transfers: int = 8) -> dict[str, Any]:
    """Debian's rclone, `copy --transfers N` of the same files, configured by env vars
    alone (RCLONE_CONFIG_<REMOTE>_*; no config file is read)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "PRACSUITE", "RCLONE_"))}
    env.update(RCLONE_CONFIG="/dev/null", RCLONE_CONFIG_RGW_TYPE="s3",
               RCLONE_CONFIG_RGW_PROVIDER="Ceph", RCLONE_CONFIG_RGW_ENDPOINT=rgw.endpoint,
               RCLONE_CONFIG_RGW_ACCESS_KEY_ID=rgw.access_key,
               RCLONE_CONFIG_RGW_SECRET_ACCESS_KEY=rgw.secret_key,
               RCLONE_CONFIG_RGW_REGION=rgw.region)
    m = run_measured(["/usr/bin/rclone", "copy", "--transfers", str(transfers),
                      str(files_dir), f"rgw:{BUCKET}/{prefix}"], env=env)
    if m.code != 0:
        raise RuntimeError(f"rclone failed ({m.code}): {m.stdout[-500:]}")
    return m.as_dict()


def _proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def sampled_run(argv: list[str], env: dict[str, str], cwd: Path, log: Path
                ) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """Run `argv`; its exit code, wall and CPU (wait4), and (epoch s, CPU s so far)
    samples every SAMPLE_S, read from /proc while it runs."""
    samples: list[tuple[float, float]] = []
    with log.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                stderr=err)
        samples.append((time.time(), 0.0))
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            cpu = _proc_cpu(proc.pid)
            if cpu is not None:
                samples.append((time.time(), cpu))
            time.sleep(SAMPLE_S)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    cpu_s = ru.ru_utime + ru.ru_stime
    samples.append((time.time(), cpu_s))
    return {"code": proc.returncode, "wall_s": round(wall, 3), "cpu_s": round(cpu_s, 3),
            "peak_rss_mb": round(ru.ru_maxrss / 1024, 1)}, samples


def cpu_at(samples: list[tuple[float, float]], when: float) -> float:
    """CPU seconds used by `when`, interpolated between the samples around it."""
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if t0 <= when <= t1:
            return c0 + (c1 - c0) * ((when - t0) / (t1 - t0) if t1 > t0 else 1.0)
    return samples[-1][1] if when > samples[-1][0] else 0.0


def upload_window(state_db: Path) -> tuple[float, float]:
    """(first transition, last `uploaded`), epoch seconds: the worker's upload phase."""
    import sqlite3

    con = sqlite3.connect(state_db)
    try:
        first, last = con.execute(
            "SELECT min(at), (SELECT max(at) FROM transitions WHERE stage = 'uploaded') "
            "FROM transitions").fetchone()
    finally:
        con.close()
    return float(first), float(last)


def worker(rgw: Radosgw, keys: tuple[str, str, str | None], manifest: Path, out: Path, *,
           verify: str, src: Path | None = None, profile: Path | None = None
           ) -> dict[str, Any]:
    """`pracsuite-ingest run` against a fresh sandbox presigning for `rgw`; `src` puts
    another source tree first on the path (an A/B of a change)."""
    from run import worker_config
    from servers import SandboxProcess

    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    argv = [PYTHON, "-m", "pracsuite_ingest", "run", "--config", str(out / "config.toml"),
            "--manifest", str(manifest)]
    with SandboxProcess(rgw, keys, validation_delay_s=0.2) as sb:
        cfg = worker_config(out / "config.toml", sb, out, rps=1000.0, concurrency=8,
                            presign_concurrency=4)
        text = cfg.read_text().replace("[reconcile]\n", f'[reconcile]\nverify = "{verify}"\n')
        cfg.write_text(text)
        meter = CpuMeter({"sandbox": [sb.pid], "radosgw": rgw.pids})
        meter.start()
        if profile is not None:
            wrap = [str(bench_tool("py-spy")), "record", "-r", "250", "-f", "raw",
                    "-o", str(profile), "--"]
            m = run_measured([*wrap, *argv], env=env, cwd=out, log=out / "worker.log")
            result: dict[str, Any] = m.as_dict()
            samples: list[tuple[float, float]] = []
        else:
            result, samples = sampled_run(argv, env, out, out / "worker.log")
        servers = meter.stop()
    if result["code"] != 0:
        raise RuntimeError(f"worker exited {result['code']}; see {out / 'worker.log'}")
    report = json.loads((out / "reports" / "latest.json").read_text())
    first, last = upload_window(out / "state.db")
    result.update(upload_s=round(last - first, 3), summary=report["summary"],
                  server_cpu_s=servers)
    if samples:
        result["start_cpu_s"] = round(cpu_at(samples, first), 3)
        result["upload_cpu_s"] = round(cpu_at(samples, last) - cpu_at(samples, first), 3)
    return result


def figures(r: dict[str, Any], files: int) -> dict[str, Any]:
    """CPU ms per file and files/s, of the upload leg and of the whole run."""
    leg_s = r.get("upload_s", r["wall_s"])
    leg_cpu = r.get("upload_cpu_s", r["cpu_s"])
    return {"leg_ms_per_file": round(leg_cpu / files * 1000, 3),
            "leg_files_per_s": round(files / leg_s, 1),
            "run_ms_per_file": round(r["cpu_s"] / files * 1000, 3),
            "run_files_per_s": round(files / r["wall_s"], 1),
            **{f"{k}_ms_per_file": round(v / files * 1000, 3)
               for k, v in r.get("server_cpu_s", {}).items()}}


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ok = sorted((r for r in rounds if "error" not in r),
                key=lambda r: r["figures"]["leg_ms_per_file"])
    if not ok:
        return {"error": rounds[0].get("error")}
    keys = ok[0]["figures"].keys()
    return {k: round(statistics.median(r["figures"][k] for r in ok), 3) for k in keys}


def _tools(args: Any, rgw: Radosgw, keys: tuple[str, str, str | None], manifest: Path,
           work: Path) -> dict[str, Any]:
    from run import fresh_dir
    from servers import empty_bucket

    files_dir = manifest.parent / "files"
    tools: dict[str, Any] = {}
    wanted = args.tools.split(",")

    def cleaned(run: Any, prefix: str = "") -> Any:
        def go() -> dict[str, Any]:
            meter = CpuMeter({"radosgw": rgw.pids})
            meter.start()
            try:
                out = dict(run())
                out.setdefault("server_cpu_s", meter.stop())
                return out
            finally:
                empty_bucket(rgw, BUCKET, prefix)
        return go

    if "rclone" in wanted:
        tools["rclone"] = cleaned(lambda: rclone(rgw, files_dir, "rclone"), "rclone/")
    if "awscli" in wanted:
        tools["aws-cli"] = cleaned(lambda: awscli(rgw, files_dir, "awscli"), "awscli/")
    variants = dict(v.split("=", 1) for v in args.variant) or {"": ""}
    for verify in args.verify.split(","):
        for name, src in variants.items():
            label = f"worker verify={verify}" + (f" {name}" if name else "")
            tools[label] = cleaned(lambda verify=verify, name=name, src=src: worker(
                rgw, keys, manifest, fresh_dir(work / "runs" / f"{verify}-{name or 'this'}"),
                verify=verify, src=Path(src) if src else None))
    return tools


def main() -> int:
    import argparse

    from run import fresh_dir, make_files
    from servers import radosgw, stop_radosgw, warm_up

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=2000, help="16 KB files, 10 clients")
    p.add_argument("--rounds", type=int, default=3, help="each tool; the median is printed")
    p.add_argument("--tools", default="rclone,awscli,worker")
    p.add_argument("--verify", default="ambiguous,off", help="the worker's reconcile.verify")
    p.add_argument("--variant", action="append", default=[],
                   help="NAME=SRC_DIR: the worker from that source tree (repeatable)")
    p.add_argument("--profile", action="store_true",
                   help="then one worker run (the first --variant's) under py-spy (raw "
                   "stacks, in --workdir; bench/profile_summary.py sums them up)")
    p.add_argument("--workdir", default="/tmp/pracsuite-bench-peers")
    p.add_argument("--out", type=Path, help="JSON (default bench/results/<time>-peers.json)")
    args = p.parse_args()
    work = Path(args.workdir)
    rgw = radosgw()
    keys = rgw.session_keys()
    res: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                           "files": args.files, "file_bytes": 16 * 1024,
                           "cpus": os.cpu_count(), "rounds": {}}
    try:
        warm_up(rgw)
        manifest = make_files(work / f"small-{args.files}", args.files, 16 * 1024, 10)
        tools = _tools(args, rgw, keys, manifest, work)
        order = list(tools)
        res["load_before"] = os.getloadavg()
        for n in range(args.rounds):
            for tool in order[n % len(order):] + order[:n % len(order)]:
                print(f"round {n + 1}: {tool}", flush=True)
                try:
                    r = tools[tool]()
                    r["figures"] = figures(r, args.files)
                except Exception as exc:  # a benchmark reports a failed tool and goes on
                    print(f"  failed: {exc!r}", flush=True)
                    r = {"error": repr(exc)[:500]}
                res["rounds"].setdefault(tool, []).append(r)
        res["load_after"] = os.getloadavg()
        if args.profile:
            out = work / "runs" / "profile"
            first = dict(v.split("=", 1) for v in args.variant[:1])  # else this checkout
            worker(rgw, keys, manifest, fresh_dir(out), verify=args.verify.split(",")[0],
                   src=Path(next(iter(first.values()))) if first else None,
                   profile=work / "profile.txt")
            res["profile"] = str(work / "profile.txt")
            print(f"py-spy raw stacks: {res['profile']}")
    finally:
        stop_radosgw(rgw)
    res["median"] = {tool: _median(rounds) for tool, rounds in res["rounds"].items()}
    print_peers(res)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = args.out or RESULTS / f"{datetime.now(UTC):%Y-%m-%dT%H-%M-%SZ}-peers.json"
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


def print_peers(res: dict[str, Any]) -> None:
    print(f"\n{res['files']} x 16 KB, {res['cpus']} cores, load {res.get('load_before')}; "
          "median of the rounds (each round's figures in the JSON)")
    print(f"{'tool':<34}{'leg ms/file':>12}{'leg f/s':>9}{'run ms/file':>12}{'run f/s':>9}"
          f"{'sandbox ms':>11}{'radosgw ms':>11}")
    for tool, m in res["median"].items():
        if "error" in m:
            print(f"{tool:<34}failed: {m['error']}")
            continue
        print(f"{tool:<34}{m['leg_ms_per_file']:>12.2f}{m['leg_files_per_s']:>9.1f}"
              f"{m['run_ms_per_file']:>12.2f}{m['run_files_per_s']:>9.1f}"
              f"{m.get('sandbox_ms_per_file', 0):>11.2f}{m.get('radosgw_ms_per_file', 0):>11.2f}")
    print("leg: rclone/aws-cli whole process; worker: its upload phase (first transition to "
          "last `uploaded`). CPU: the tool's own user+sys; sandbox/radosgw: theirs, per file.")


if __name__ == "__main__":
    raise SystemExit(main())
