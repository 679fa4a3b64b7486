"""A scaled migration on one machine, as Kubernetes would run it (deploy/k8s).

Two practices, each against its own sandbox, run as shard processes in parallel
(practice a: 3 shards, chosen by `--shard`; practice b: 2 shards, chosen the Indexed Job
way, from JOB_COMPLETION_INDEX and PRACSUITE_INGEST_SHARD__COUNT). One shard is
SIGKILLed mid-upload and started again, as a pod whose node died would be, until it
exits 0 (an Indexed Job's backoffLimitPerIndex). Then `report merge` of all five.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from e2e import config, make_files, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

pytestmark = pytest.mark.slow

RATE = 30.0  # each practice's api.requests_per_second, shared by its shards
API_KINDS = ("presign", "list", "record", "presign_url", "content", "unknown")
# practice -> (shards, files, clients); clients overlap: practices are separate tenants
PRACTICES = {"clinic-a": (3, 45, [str(c) for c in range(1, 13)]),
             "clinic-b": (2, 30, [str(c) for c in range(1, 9)])}
KILLED = ("clinic-a", 2)  # owns clients 1, 2, 3, 4 and 11 of clinic-a


async def start(*args: str, cwd: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("PRACSUITE") and k != "JOB_COMPLETION_INDEX"}
    full_env.update(env)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pracsuite_ingest", *args, cwd=cwd, env=full_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, err.decode()[-3000:]


async def kill_mid_upload(proc: asyncio.subprocess.Process, uploads: int) -> None:
    """SIGKILL once the shard has logged `uploads` upload events, uploads still in flight."""
    assert proc.stderr is not None
    seen = 0
    while seen < uploads:
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert line, "the shard ended before it was killed"
        event = json.loads(line)
        seen += event.get("stage") == "upload"
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL


class RateWatch:
    """Samples each sandbox's API request count, to bound the rate any window saw."""

    def __init__(self, sandboxes: dict[str, Sandbox]) -> None:
        self.sandboxes = sandboxes
        self.samples: list[tuple[float, dict[str, int]]] = []

    def count(self, name: str) -> int:
        requests = self.sandboxes[name].stats()["requests"]
        return sum(sum(requests.get(kind, {}).values()) for kind in API_KINDS)

    async def run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), {n: self.count(n) for n in self.sandboxes}))
            await asyncio.sleep(0.05)

    def worst_excess(self, name: str, rate: float, burst: float) -> float:
        """max over windows of (requests - rate * seconds - burst): <= 0 if within limits."""
        worst = float("-inf")
        for i, (t0, c0) in enumerate(self.samples):
            for t1, c1 in self.samples[i + 1:]:
                worst = max(worst, (c1[name] - c0[name]) - rate * (t1 - t0) - burst)
        return worst


async def test_a_sharded_migration_of_two_practices_accounts_for_every_row_once(
        tmp_path: Path) -> None:
    # latency on clinic-a's sandbox: when its shard is killed, requests are in flight
    async with Sandbox(SandboxOptions(validation_delay_s=0.2, seed=1,
                                      latency_ms=(50, 250))) as sa, \
               Sandbox(SandboxOptions(validation_delay_s=0.2, seed=2)) as sb:
        sandboxes = {"clinic-a": sa, "clinic-b": sb}
        expected: dict[str, set[str]] = {}
        shard_runs: dict[tuple[str, int], tuple[list[str], dict[str, str], Path]] = {}
        for name, (count, files, clients) in PRACTICES.items():
            root = tmp_path / name
            rows = make_files(root, files, clients)
            expected[name] = {str(root / r["path"]) for r in rows}
            manifest = write_manifest(root, rows)
            cfg = config(root, sandboxes[name],
                         api={"requests_per_second": RATE, "max_attempts": 10},
                         reconcile={"deadline_s": 4, "poll_interval_s": 0.3},
                         state={"path": str(root / "state" / f"{name}.db")},
                         report={"dir": str(tmp_path / "reports" / name)},
                         log={"level": "debug", "format": "json"})
            for i in range(1, count + 1):
                args = ["run", "--config", str(cfg), "--manifest", str(manifest)]
                env: dict[str, str] = {}
                if name == "clinic-a":
                    args += ["--shard", f"{i}/{count}"]
                else:
                    env = {"JOB_COMPLETION_INDEX": str(i - 1),
                           "PRACSUITE_INGEST_SHARD__COUNT": str(count)}
                shard_runs[(name, i)] = (args, env, root)

        watch = RateWatch(sandboxes)
        watcher = asyncio.create_task(watch.run())
        procs = {key: await start(*args, cwd=root, env=env)
                 for key, (args, env, root) in shard_runs.items()}
        # the others' output is drained from the start, so no shard waits on a full pipe
        others = {key: asyncio.create_task(finish(p)) for key, p in procs.items()
                  if key != KILLED}
        await kill_mid_upload(procs[KILLED], uploads=3)
        args, env, root = shard_runs[KILLED]
        restarts = []
        for _ in range(3):  # an Indexed Job retries the failed index (backoffLimitPerIndex)
            code, err = await finish(await start(*args, cwd=root, env=env))
            restarts.append(code)
            if code == 0:
                break
        results = {key: await task for key, task in others.items()}
        status = await start("status", "--config", args[args.index("--config") + 1],
                             "--shard", "2/3", cwd=root, env={})
        status_out, _ = await asyncio.wait_for(status.communicate(), 60)
        watcher.cancel()
        stats = {name: sb_.stats() for name, sb_ in sandboxes.items()}

    assert restarts[-1] == 0, f"restarts exited {restarts}: {err}"
    for key, (code, err) in results.items():
        assert code == 0, (key, err)
    # the killed shard resumed from its own state file: the killed run (marked interrupted
    # by the restart that found it dead), then the restarts
    runs = json.loads(status_out)["runs"]
    assert json.loads(status_out)["state"].endswith("clinic-a.db.shard-2-of-3")
    assert [r["outcome"] for r in runs] == ["interrupted"] + ["finished"] * len(restarts)
    assert sum(runs[0]["stages"].values()) > 0
    shard_dirs = sorted((tmp_path / "reports").glob("*/shard-*-of-*"))
    assert [f"{d.parent.name}/{d.name}" for d in shard_dirs] == [
        "clinic-a/shard-1-of-3", "clinic-a/shard-2-of-3", "clinic-a/shard-3-of-3",
        "clinic-b/shard-1-of-2", "clinic-b/shard-2-of-2"]
    merge = await start("report", "merge", *map(str, shard_dirs), "--out",
                        str(tmp_path / "reports" / "all"), cwd=tmp_path, env={})
    code, err = await finish(merge)
    assert code == 0, err
    merged: dict[str, Any] = json.loads((tmp_path / "reports" / "all" / "latest.json")
                                        .read_text())

    # every row exactly once, and done
    paths = Counter(it["path"] for it in merged["items"])
    assert set(paths) == expected["clinic-a"] | expected["clinic-b"]
    assert set(paths.values()) == {1}
    assert {it["status"] for it in merged["items"]} <= {"validated", "skipped"}
    totals = {p["practice"]: p["summary"]["total"] for p in merged["practices"]}
    assert totals == {"clinic-a": 45, "clinic-b": 30}
    assert merged["summary"]["total"] == 75
    # PracSuite holds exactly one record per row: nothing was sent twice, even by the
    # shard that was killed mid-upload
    for name in PRACTICES:
        created = {r["id"] for c in stats[name]["records_created"].values()
                   for r in c["records"]}
        ids = [it["attachment_id"] for it in merged["items"] if it["path"] in expected[name]]
        assert stats[name]["records_created_total"] == len(expected[name])
        assert sorted(ids) == sorted(created)
    # the practice's rate is shared by its shards: any window saw at most RATE per
    # second, plus each shard's initial burst (RATE / N each, one more for the restart)
    for name, (count, _, _) in PRACTICES.items():
        burst = RATE + RATE / count + 5  # 5: requests on the wire when a sample is taken
        assert watch.worst_excess(name, RATE, burst) <= 0, name
