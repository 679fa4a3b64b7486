"""The soak: a migration SIGKILLed again and again, at random moments in every phase,
against a sandbox with every fault on; then one run is left to finish.

What must hold at the end (`Soak.problems` lists what did not):
- no duplicate: at most one PracSuite record per client and file name;
- nothing lost: every row of the manifest `validated` or `skipped` in the last run's
  report, with the attachment id of the record PracSuite holds for that very file;
- every row exactly one status; no run left `running` in the state file;
- S3 POSTs bounded: at most `POST_SLACK` x files plus, for each kill, the uploads it
  may have cut short (`upload.concurrency`), which are reconciled and sent again.

`tests/test_soak.py` runs a short one in the suite; `make soak` runs the long one:

    python tests/soak.py [--seeds 1,2,3,4,5] [--files 2000] [--clients 20] [--kills 10]

Nothing here is timed against a limit: the figures (wall time included) are printed and
written to `bench/results/soak-<time>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e import config, make_files, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.sandbox.faults import ThrottleStyle

PHASES = ("snapshot", "presign", "upload", "reconcile")  # each gets every 4th kill
POST_SLACK = 1.3  # S3 POSTs per file without kills: SlowDown and cut bodies are sent again
CONCURRENCY = 4
VERBOSE = bool(os.environ.get("SOAK_VERBOSE"))
RECONCILE_LINE = b'"stage": "reconcile"'  # a JSON log line of the reconcile phase


@dataclass
class SoakPlan:
    seed: int
    files: int
    clients: int
    kills: int
    deadline_s: float = 3.0
    validation_delay_s: float = 0.3

    def sandbox(self) -> SandboxOptions:
        """Every fault at once, at low rates (the shape of issue 17's report)."""
        return SandboxOptions(
            seed=self.seed, validation_delay_s=self.validation_delay_s,
            fail_rate_429=0.02, throttle_style=ThrottleStyle.GATEWAY, retry_after_s=1,
            fail_rate_500=0.02, s3_slowdown_rate=0.03, s3_drop_before_rate=0.02,
            s3_drop_after_rate=0.03, latency_ms=(5, 40))


@dataclass
class Soak:
    """What one soak did and found."""

    seed: int
    files: int
    clients: int
    kills: int = 0
    kills_by_phase: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    final_exit: int | None = None
    duplicates: int = 0
    lost: int = 0
    wrong_record: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    rows_in_report: int = 0
    runs_left_running: int = 0
    runs_interrupted: int = 0
    s3_posts: int = 0
    presigns: int = 0
    uploads_stored: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def posts_per_file(self) -> float:
        return self.s3_posts / self.files

    @property
    def post_bound(self) -> int:
        return int(POST_SLACK * self.files) + self.kills * CONCURRENCY

    def problems(self) -> list[str]:
        out = []
        if self.final_exit != 0:
            out.append(f"the last run exited {self.final_exit}")
        if self.duplicates:
            out.append(f"{self.duplicates} duplicate records")
        if self.lost:
            out.append(f"{self.lost} rows lost")
        if self.wrong_record:
            out.append(f"{self.wrong_record} rows hold another file's record")
        if self.rows_in_report != self.files:
            out.append(f"{self.rows_in_report} rows in the report for {self.files}")
        if self.runs_left_running:
            out.append(f"{self.runs_left_running} runs still `running` in the state file")
        if self.s3_posts > self.post_bound:
            out.append(f"{self.s3_posts} S3 POSTs, over the bound {self.post_bound}")
        return out

    def figures(self) -> dict[str, Any]:
        return {**asdict(self), "posts_per_file": round(self.posts_per_file, 3),
                "post_bound": self.post_bound, "problems": self.problems()}


class Child:
    """One `run` as a child process; notices when it reaches the reconcile phase."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.reconciling = asyncio.Event()
        self.tail: list[bytes] = []

    @classmethod
    async def start(cls, cfg: Path, manifest: Path, cwd: Path) -> Child:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pracsuite_ingest", "run", "--config", str(cfg),
            "--manifest", str(manifest), cwd=cwd, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def drain(self) -> None:
        """Read stderr to its end (a full pipe would stall the child)."""
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            if RECONCILE_LINE in line:
                self.reconciling.set()
            self.tail = [*self.tail[-40:], line]

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


async def _until(child: Child, count: Callable[[], int], target: int,
                 stall_s: float = 2.0) -> None:
    """Wait until `count()` reaches `target` or the child exits. A count that moved and
    then stopped for `stall_s` (the phase ran out of work) ends the wait too; before its
    first move the child may still be starting (imports, scan, snapshots)."""
    last, moved_at = count(), None
    while child.proc.returncode is None and last < target:
        await asyncio.sleep(0.01)
        value = count()
        if value != last:
            last, moved_at = value, time.monotonic()
        elif moved_at is not None and time.monotonic() - moved_at > stall_s:
            return


async def _one_killed_run(sb: Sandbox, plan: SoakPlan, rng: random.Random, cfg: Path,
                          manifest: Path, root: Path, fresh: int, phase: str) -> str | None:
    """Start a run and kill it at a drawn moment of `phase` (`fresh`: rows it has to
    send, about). The phase it was in when killed, or None if it ended first."""
    counters = sb.stats_counters

    def lists() -> int:
        return sum(counters.requests["list"].values())

    def presigns() -> int:
        return sum(counters.requests["presign"].values())

    at = (lists(), presigns(), counters.uploads_stored)
    share = max(1, int(fresh * rng.uniform(0.1, 0.9)))
    child = await Child.start(cfg, manifest, root)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(child.drain())
        if phase == "snapshot":  # its first list request: the snapshots, the first presigns
            await _until(child, lists, at[0] + 1)
            await asyncio.sleep(rng.uniform(0.0, 0.1))
        elif phase == "presign":
            await _until(child, presigns, at[1] + share)
        elif phase == "upload":
            await _until(child, lambda: counters.uploads_stored, at[2] + share)
        else:
            waiter = asyncio.ensure_future(child.reconciling.wait())
            exited = asyncio.ensure_future(child.proc.wait())
            await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            exited.cancel()
            await asyncio.sleep(rng.uniform(0.0, plan.deadline_s / 2))
        alive = child.proc.returncode is None
        seen = ("reconcile" if child.reconciling.is_set() else
                "upload" if counters.uploads_stored > at[2] else
                "presign" if presigns() > at[1] else
                "snapshot" if lists() > at[0] else "startup")
        await child.kill()
    if child.proc.returncode in (2, 3):  # configuration or state unusable: a soak bug
        raise RuntimeError(b"".join(child.tail).decode(errors="replace"))
    return seen if alive else None


def _measure(soak: Soak, stats: dict[str, Any], report: dict[str, Any],
             rows: list[dict[str, str]], state_path: Path) -> None:
    records: dict[tuple[str, str], list[str]] = {}
    for client, entry in stats["records_created"].items():
        for r in entry["records"]:
            records.setdefault((client, r["file_name"]), []).append(r["id"])
    soak.duplicates = sum(len(ids) - 1 for ids in records.values())
    items = report["items"]
    soak.rows_in_report = len(items)
    soak.statuses = dict(Counter(it["status"] for it in items))
    done = {(it["client_id"], it["file_name"]): it for it in items
            if it["status"] in ("validated", "skipped")}
    for row in rows:
        name = Path(row["path"]).name
        it = done.get((row["client_id"], name))
        if it is None or not records.get((row["client_id"], name)):
            soak.lost += 1
        elif it["attachment_id"] not in records[(row["client_id"], name)]:
            soak.wrong_record += 1
    soak.s3_posts = sum(stats["requests"]["s3_post"].values())
    soak.presigns = sum(stats["requests"]["presign"].values())
    soak.uploads_stored = stats["uploads_stored"]
    soak.faults = dict(stats["faults"])
    con = sqlite3.connect(state_path)
    try:
        outcomes = Counter(r[0] for r in con.execute("SELECT outcome FROM runs"))
    finally:
        con.close()
    soak.runs_left_running = outcomes.get("running", 0)
    soak.runs_interrupted = outcomes.get("interrupted", 0)


async def soak(plan: SoakPlan, root: Path) -> Soak:
    """Kill `plan.kills` runs, then let one finish; measure what PracSuite holds.

    The manifest grows from run to run (a practice exporting in batches), so that each
    killed run has uploads of its own beside those carried from the runs before it:
    the mix that issue 17's duplicates came from. The last run reads all of it.
    """
    started = time.monotonic()
    rng = random.Random(plan.seed)
    result = Soak(plan.seed, plan.files, plan.clients)
    clients = [str(c) for c in range(1, plan.clients + 1)]
    rows = make_files(root, plan.files, clients, size=700)
    phases: Counter[str] = Counter()
    async with Sandbox(plan.sandbox()) as sb:
        cfg = config(root, sb, api={"requests_per_second": 1000.0, "max_attempts": 10},
                     upload={"concurrency": CONCURRENCY, "presign_concurrency": 4},
                     reconcile={"deadline_s": plan.deadline_s, "poll_interval_s": 0.3})
        order = list(PHASES)
        while result.kills < plan.kills and result.runs < 3 * plan.kills:
            if result.kills % len(order) == 0:
                rng.shuffle(order)
            phase = order[result.kills % len(order)]
            cut = min(plan.files, plan.files * (result.runs + 1) // (plan.kills + 1))
            manifest = write_manifest(root, rows[:cut])
            fresh = max(1, cut - sb.stats()["records_created_total"])
            at = time.monotonic()
            seen = await _one_killed_run(sb, plan, rng, cfg, manifest, root, fresh, phase)
            result.runs += 1
            if VERBOSE:
                print(f"  run {result.runs}: rows {cut}, aimed at {phase}, killed in {seen}, "
                      f"{time.monotonic() - at:.1f} s", file=sys.stderr)
            if seen is not None:
                result.kills += 1
                phases[seen] += 1
            await asyncio.sleep(rng.uniform(0.0, 0.5))  # between runs: PracSuite validates
        manifest = write_manifest(root, rows)
        last = await Child.start(cfg, manifest, root)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(last.drain())
            result.final_exit = await asyncio.wait_for(last.proc.wait(), 600)
        result.runs += 1
        if result.final_exit != 0:
            sys.stderr.write(b"".join(last.tail).decode(errors="replace"))
        stats = sb.stats()
    report = json.loads((root / "reports" / "latest.json").read_text())
    result.kills_by_phase = dict(sorted(phases.items()))
    _measure(result, stats, report, rows, root / "state.db")
    result.wall_s = round(time.monotonic() - started, 1)
    return result


def _table(results: list[Soak]) -> str:
    head = (f"{'seed':>4} {'files':>6} {'kills':>5} {'runs':>4} {'dup':>3} {'lost':>4} "
            f"{'wrong':>5} {'POST/file':>9} {'presign/file':>12} {'wall s':>7}  kills by phase")
    lines = [head]
    for r in results:
        lines.append(f"{r.seed:>4} {r.files:>6} {r.kills:>5} {r.runs:>4} {r.duplicates:>3} "
                     f"{r.lost:>4} {r.wrong_record:>5} {r.posts_per_file:>9.3f} "
                     f"{r.presigns / r.files:>12.3f} {r.wall_s:>7.1f}  {r.kills_by_phase}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "bench" / "results")
    args = p.parse_args(argv)
    # A killed child leaves its connections half-open: the sandbox's server logs each.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        plan = SoakPlan(seed, args.files, args.clients, args.kills)
        with tempfile.TemporaryDirectory(prefix=f"soak-{seed}-") as tmp:
            r = asyncio.run(soak(plan, Path(tmp)))
        results.append(r)
        print(_table([r]).splitlines()[-1], f" {r.problems() or 'ok'}", flush=True)
    print()
    print(_table(results))
    total = sum(r.files for r in results)
    print(f"\n{len(results)} seeds, {total} files, {sum(r.kills for r in results)} kills: "
          f"{sum(r.duplicates for r in results)} duplicates, {sum(r.lost for r in results)} "
          f"lost, {sum(r.s3_posts for r in results) / total:.3f} S3 POSTs per file, "
          f"{sum(r.wall_s for r in results):.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"soak-{datetime.now(UTC):%Y-%m-%dT%H-%M-%SZ}.json"
    out.write_text(json.dumps([r.figures() for r in results], indent=1) + "\n")
    print(f"figures: {out}")
    return 1 if any(r.problems() for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
