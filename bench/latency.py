"""Small files with 20-30 ms on every API call and every upload: the worker before and
after presign-ahead, against the naive loop and against its own bound at that latency.

    make bench-latency        # or: .venv/bin/python bench/latency.py [--files 500]

The sandbox (a child process, `--latency-ms 20,30` on each API request) presigns for
radosgw; between every client and radosgw runs bench/relay.py, holding each request
20-30 ms (radosgw has no latency knob, and the sandbox's own S3 stand-in would put a
Python S3 on the worker's two cores instead of the S3 the other cases use). The same
files are sent by the naive loop (bench/naive.py) and by the worker at
upload.concurrency / presign_concurrency 8/4 (the defaults) and 8/8, with the code
before presign-ahead (the commit before src/pracsuite_ingest/presign_ahead.py was
added, or `--before REF`, extracted with `git archive`) and the code of this checkout,
in one run, the order rotated each round. Prints a table; writes
bench/results/<time>-latency.json. Not part of the test suite.

The bound of the upload phase, from the latency alone (loopback CPU time ignored): a
file costs one presign (an API call, mean latency La) and one upload POST (mean Ls);
the client snapshots (one list call per client) are shared by all its files. With
presign-ahead, c upload slots and p presigns in flight:
    files/s <= min(c / Ls, p / La, requests_per_second)
Before it, each slot presigned and then uploaded one file:
    files/s <= min(c / (La + Ls), p / La, requests_per_second)
On a loaded machine S3 and the CPU take time of their own, so the table also gives a
measured bound: c / Ls replaced by the least of what 8 raw presigned POSTs in flight
did through the same relay (`limit 8`, no presign, no checks) and what the same
pipeline did with no latency at all (`after c/p @0ms`: the machine's CPU, now).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import peers
from measure import CpuMeter, run_measured
from run import fresh_dir, make_files, phases, worker_config
from servers import BUCKET as LIMIT_BUCKET
from servers import (
    PYTHON,
    REPO,
    Radosgw,
    SandboxProcess,
    empty_bucket,
    radosgw,
    stop_radosgw,
)

BUCKET = "pracsuite-bench-latency"
RPS = 1000.0  # the API rate is not what is measured here
CONFIGS = ((8, 4), (8, 8))


def before_tree(ref: str | None, work: Path) -> tuple[str, Path]:
    """The `src` of the code before presign-ahead, extracted under `work`."""
    if ref is None:
        added = subprocess.run(
            ["git", "log", "--diff-filter=A", "--format=%H", "--",
             "src/pracsuite_ingest/presign_ahead.py"],
            cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
        if not added:
            raise SystemExit("no commit adds presign_ahead.py: pass --before REF")
        ref = f"{added[-1]}^"
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip()
    dest = work / f"before-{sha}"
    if not (dest / "src" / "pracsuite_ingest").is_dir():
        archive = subprocess.run(["git", "archive", "--format=tar", sha, "src"], cwd=REPO,
                                 check=True, capture_output=True).stdout
        with tempfile.TemporaryFile() as fh:
            fh.write(archive)
            fh.seek(0)
            with tarfile.open(fileobj=fh) as tar:
                tar.extractall(dest, filter="data")
    return sha, dest / "src"


@contextlib.contextmanager
def relay(rgw: Radosgw, latency: str) -> Iterator[tuple[str, int]]:
    """bench/relay.py in front of radosgw; yields its URL and pid."""
    target = rgw.endpoint.split("//", 1)[1].rstrip("/")
    proc = subprocess.Popen([PYTHON, str(REPO / "bench" / "relay.py"), "--to", target,
                             "--latency-ms", latency, "--seed", "1"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    try:
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


class Tools:
    def __init__(self, args: argparse.Namespace, rgw: Radosgw, s3_url: str, relay_pid: int,
                 before_src: Path, latency_ms: str) -> None:
        self.args, self.rgw, self.s3_url, self.before_src = args, rgw, s3_url, before_src
        self.relay_pid, self.latency_ms = relay_pid, latency_ms
        self.keys = rgw.session_keys()
        self.work = Path(args.workdir)

    def sandbox(self) -> SandboxProcess:
        return SandboxProcess(self.rgw, self.keys, validation_delay_s=0.2,
                              api_latency_ms=self.latency_ms, s3_url=self.s3_url,
                              bucket=BUCKET)

    def meter(self, sb: SandboxProcess) -> CpuMeter:
        meter = CpuMeter({"sandbox": [sb.pid], "relay": [self.relay_pid],
                          "radosgw": self.rgw.pids})
        meter.start()
        return meter

    def naive(self, manifest: Path) -> dict[str, Any]:
        with self.sandbox() as sb:
            meter = self.meter(sb)
            result = peers.naive(sb.base_url, sb.vendor_key, sb.practice_key, manifest)
            result["server_cpu_s"] = meter.stop()
        empty_bucket(self.rgw, BUCKET)
        return result

    def limit(self, manifest: Path, c: int) -> dict[str, Any]:
        """Raw presigned POSTs, c at a time, through the relay: the most the upload side
        does at this latency on this machine, with no presign and no checks at all."""
        through = dataclasses.replace(self.rgw, endpoint=self.s3_url)
        prefix = f"latency-limit-{c}"
        result = peers.limit_posts(through, self.keys, manifest, c, prefix)
        empty_bucket(self.rgw, LIMIT_BUCKET, prefix + "/")
        return {**result, "upload_s": result["wall_s"]}

    def worker(self, manifest: Path, c: int, pc: int, *, before: bool) -> dict[str, Any]:
        name = f"{'before' if before else 'after'}-{c}-{pc}-{self.latency_ms}"
        out = fresh_dir(self.work / "runs" / name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
        if before:  # the old code first on the path, ahead of this checkout's
            env["PYTHONPATH"] = str(self.before_src)
        with self.sandbox() as sb:
            cfg = worker_config(out / "config.toml", sb, out, rps=RPS, concurrency=c,
                                presign_concurrency=pc)
            meter = self.meter(sb)
            m = run_measured([PYTHON, "-m", "pracsuite_ingest", "run", "--config", str(cfg),
                              "--manifest", str(manifest)], env=env, cwd=out,
                             log=out / "worker.log")
            servers = meter.stop()
            stats = sb.stats()
        empty_bucket(self.rgw, BUCKET)
        if m.code != 0:
            raise RuntimeError(f"{name} exited {m.code}; see {out / 'worker.log'}")
        req = stats["requests"]
        return {**m.as_dict(), **phases(out / "state.db"), **slots(out / "state.db", c),
                "server_cpu_s": servers,
                "api_calls": {k: sum(req[k].values()) for k in ("presign", "list",
                                                                   "presign_url")}}


def slots(state_db: Path, concurrency: int) -> dict[str, float]:
    """From the state file: the mean time of one upload POST (`uploading` to
    `uploaded`: S3's latency and its work), and the share of the upload phase the
    upload slots spent uploading (1.0: a slot never waited for anything else)."""
    con = sqlite3.connect(state_db)
    try:
        rows = con.execute("SELECT item_id, stage, at FROM transitions ORDER BY rowid").fetchall()
    finally:
        con.close()
    first: dict[int, dict[str, float]] = {}
    for item, stage, at in rows:
        first.setdefault(item, {}).setdefault(stage, at)
    posts = [t["uploaded"] - t["uploading"] for t in first.values()
             if "uploading" in t and "uploaded" in t]
    start = min(at for _, _, at in rows)
    end = max(t["uploaded"] for t in first.values() if "uploaded" in t)
    return {"upload_post_ms": round(sum(posts) / len(posts) * 1000, 1),
            "slots_busy": round(sum(posts) / (concurrency * (end - start)), 3)}


def bounds(c: int, pc: int, la_s: float, ls_s: float) -> dict[str, float]:
    if not la_s or not ls_s:  # no latency: only the rate is a bound
        return {"after": RPS, "before": RPS}
    return {"after": min(c / ls_s, pc / la_s, RPS),
            "before": min(c / (la_s + ls_s), pc / la_s, RPS)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=500, help="16 KB files, 10 clients")
    p.add_argument("--latency-ms", default="20,30",
                   help="MIN,MAX on every API call and every upload")
    p.add_argument("--rounds", type=int, default=1, help="each tool; the median is kept")
    p.add_argument("--before", help="git ref of the code to compare with")
    p.add_argument("--workdir", default="/tmp/pracsuite-bench-latency")
    args = p.parse_args()
    low, _, high = args.latency_ms.partition(",")
    mean_s = (int(low) + int(high or low)) / 2 / 1000
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sha, before_src = before_tree(args.before, work)
    manifest = make_files(work / f"small-{args.files}", args.files, 16 * 1024, 10)
    rgw = radosgw()
    s3 = rgw.s3()
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    n = args.files
    runs: dict[str, list[dict[str, Any]]] = {}
    load_before = os.getloadavg()[0]
    try:
        with relay(rgw, args.latency_ms) as (s3_url, relay_pid), \
                relay(rgw, "0") as (s3_url_0, relay_pid_0):
            tools = Tools(args, rgw, s3_url, relay_pid, before_src, args.latency_ms)
            # the same pipeline without the latency: what this machine's CPU allows now
            zero = Tools(args, rgw, s3_url_0, relay_pid_0, before_src, "0")
            todo: dict[str, Callable[[], dict[str, Any]]] = {
                "naive": lambda: tools.naive(manifest),
                "limit 8": lambda: tools.limit(manifest, 8)}
            for c, pc in CONFIGS:
                for before in (True, False):
                    todo[f"{'before' if before else 'after'} {c}/{pc}"] = (
                        lambda c=c, pc=pc, before=before: tools.worker(manifest, c, pc,
                                                                       before=before))
                if mean_s:
                    todo[f"after {c}/{pc} @0ms"] = (
                        lambda c=c, pc=pc: zero.worker(manifest, c, pc, before=False))
            order = list(todo)
            for r in range(args.rounds):
                for tool in order[r % len(order):] + order[:r % len(order)]:
                    print(f"  round {r + 1}: {tool}", flush=True)
                    try:
                        res = todo[tool]()
                    except Exception as exc:  # a benchmark reports a failed tool
                        print(f"    failed: {exc!r}", flush=True)
                        res = {"error": repr(exc)[:300]}
                    runs.setdefault(tool, []).append(res)
    finally:
        stop_radosgw(rgw)
    results = {tool: median(rs, n) for tool, rs in runs.items()}
    out = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "files": n,
           "file_bytes": 16 * 1024, "latency_ms": args.latency_ms, "before": sha,
           "rounds": args.rounds, "cpus": os.cpu_count(), "results": results,
           # other work on the machine: the figures are only as good as it was quiet
           "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
           "bounds": {f"{c}/{pc}": bounds(c, pc, mean_s, mean_s) for c, pc in CONFIGS}}
    print_table(out, mean_s)
    dest = REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%dT%H-%M-%SZ}-latency.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written: {dest.relative_to(REPO)}")
    return 0


def median(rs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    ok = sorted((r for r in rs if "error" not in r), key=lambda r: r.get("upload_s", 0))
    if not ok:
        return rs[0]
    r = ok[(len(ok) - 1) // 2]
    return {**r, "upload_files_per_s": round(n / r["upload_s"], 1),
            "files_per_s": round(n / r["wall_s"], 1),
            "all_upload_files_per_s": [round(n / x["upload_s"], 1) for x in ok]}


def measured_bound(out: dict[str, Any], cfg: str, side: str, mean_s: float) -> float | None:
    """The bound with the upload side as measured (raw POSTs through the relay, c in
    flight); before presign-ahead each slot also waited a presign (La) per file."""
    limit = out["results"].get("limit 8", {})
    if "upload_s" not in limit or not cfg.startswith("8/"):
        return None
    posts = out["files"] / limit["upload_s"]  # c / (Ls + S3's own time), as measured
    cpu = out["results"].get(f"after {cfg} @0ms", {})
    if "upload_s" in cpu:  # no faster than the same pipeline without the latency
        posts = min(posts, out["files"] / cpu["upload_s"])
    pc = int(cfg.split("/")[1])
    presigns = pc / mean_s if mean_s else RPS
    if side == "after":
        return min(posts, presigns, RPS)
    per_post_s = 8 / posts
    return min(8 / (per_post_s + mean_s), presigns, RPS)


def print_table(out: dict[str, Any], mean_s: float) -> None:
    res, n = out["results"], out["files"]
    ms = mean_s * 1000
    print(f"\n{n} files of 16 KB, 10 clients; {out['latency_ms']} ms (mean {ms:g}) on every "
          f"API call and every upload; before = {out['before']}; {out['rounds']} round(s), "
          f"median; {out['cpus']} shared cores, load average {out['load_average'][0]} at the "
          f"start, {out['load_average'][1]} at the end")
    print("bound (latency alone): a file = 1 presign (API, La) + 1 upload (S3, Ls); "
          f"La = Ls = {ms:g} ms")
    print("  after:  min(c / Ls, p / La)        before: min(c / (La + Ls), p / La)")
    naive = res.get("naive", {})
    naive_up = n / naive["upload_s"] if "upload_s" in naive else None
    print(f"\n{'tool':<13}{'upload s':>9}{'upl f/s':>9}{'total s':>9}{'files/s':>9}"
          f"{'bound f/s':>10}{'of bound':>9}{'of meas.':>9}{'x naive':>8}{'(total)':>8}"
          f"{'POST ms':>8}{'slots busy':>11}{'CPU ms/file':>12}")
    for tool, r in res.items():
        if "error" in r:
            print(f"{tool:<13}failed: {r['error'][:80]}")
            continue
        up = n / r["upload_s"]
        total = n / r["wall_s"]
        bound = of = of_m = x = xt = post = busy = ""
        cpu = sum(r.get("server_cpu_s", {}).values()) + (r.get("cpu_s") or 0)
        if tool != "naive" and not tool.startswith("limit") and "@" not in tool:
            post, busy = f"{r['upload_post_ms']:.0f}", f"{r['slots_busy']:.0%}"
            side, cfg = tool.split()
            b = out["bounds"][cfg][side]
            bound = f"{b:.0f}"
            of = f"{up / b:.0%}"
            measured = measured_bound(out, cfg, side, mean_s)
            of_m = f"{up / measured:.0%}" if measured else ""
            if naive_up:
                x = f"{up / naive_up:.1f}x"
                xt = f"{total / (n / naive['wall_s']):.1f}x"
        print(f"{tool:<13}{r['upload_s']:>9.2f}{up:>9.1f}{r['wall_s']:>9.2f}{total:>9.1f}"
              f"{bound:>10}{of:>9}{of_m:>9}{x:>8}{xt:>8}{post:>8}{busy:>11}"
              f"{cpu / n * 1000:>12.2f}")
    for cfg, b in out["bounds"].items():
        c, pc = cfg.split("/")
        print(f"  bound {cfg}: after min({c}/{mean_s:g} s, {pc}/{mean_s:g} s) = "
              f"{b['after']:.0f} files/s; before min({c}/{2 * mean_s:g} s, {pc}/{mean_s:g} s)"
              f" = {b['before']:.0f} files/s")
        limit = res.get("limit 8", {})
        if "upload_s" in limit:
            sides = [f"8 raw POSTs in flight through the relay did {n / limit['upload_s']:.0f}"]
            flat = res.get(f"after {cfg} @0ms", {})
            if "upload_s" in flat:
                sides.append(f"the same pipeline with no latency, on this machine now, "
                             f"{n / flat['upload_s']:.0f}")
            print(f"  measured bound {cfg}: c / Ls as measured, the least of: "
                  f"{'; '.join(sides)} files/s; after "
                  f"{measured_bound(out, cfg, 'after', mean_s):.0f}, before "
                  f"{measured_bound(out, cfg, 'before', mean_s):.0f} files/s")
    print("upload f/s: files / the upload phase (first transition to last `uploaded`; the "
          "naive loop: to its last POST); files/s and (total): end to end, with reconcile "
          "(1 s polls)")
    print("POST ms: mean time of one upload POST (`uploading` to `uploaded`: the relay's "
          "latency and radosgw's work); slots busy: the share of the upload phase the c "
          "slots spent in a POST (100%: no slot ever waited for a presign); CPU ms/file: "
          "the worker (or naive), sandbox, relay and radosgw, over the whole run")


if __name__ == "__main__":
    sys.exit(main())
