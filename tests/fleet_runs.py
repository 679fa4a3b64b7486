"""Several practices on one vendor key: real `pracsuite_ingest run` processes, each with
its own config, state and practice key, against ONE sandbox whose rate budget is the
vendor key's (every practice key draws from it). Used by tests/test_fleet.py and
bench/fleet.py.

A practice's files go to its own patients (no two practices share a client id), so
each run's proof is its own; the sandbox's ledger says whether any file arrived twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from e2e import config, make_files, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions, ThrottleStyle

CLIENTS_PER_PRACTICE = 6  # the sandbox knows patients 1-50: up to 8 practices


@dataclass
class Practice:
    files: int
    start_after_s: float = 0.0  # joins the fleet this long after the first started


@dataclass
class Outcome:
    code: int
    started: float  # wall clock: the run's "run started" log line (after start-up)
    ended: float  # wall clock: the process exited
    report: dict[str, Any]
    stderr: str

    @property
    def duration(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class Window:
    """Whole seconds [start_s, end_s) of the sandbox's clock, and what the vendor key's
    budget did in them for the practices looked at (`granted[i]`: practice i's calls)."""

    start_s: int
    end_s: int
    budget: float
    granted: list[int]
    throttled: int

    @property
    def seconds(self) -> int:
        return self.end_s - self.start_s

    @property
    def used(self) -> float:
        """Calls granted over what the budget allows in the window."""
        return sum(self.granted) / (self.budget * max(1, self.seconds))

    @property
    def throttled_share(self) -> float:
        return self.throttled / max(1, sum(self.granted) + self.throttled)

    @property
    def spread(self) -> float:
        """The largest practice's share of the granted calls over the smallest's."""
        return max(self.granted) / max(1, min(self.granted))

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "used_of_budget": round(self.used, 3),
                "throttled_share": round(self.throttled_share, 4),
                "share_spread": round(self.spread, 3), "granted": self.granted,
                "throttled": self.throttled}


def per_second(usage: dict[str, Any], practice: int) -> tuple[dict[int, int], dict[int, int]]:
    """Practice `practice`'s granted and throttled calls by second of the sandbox's clock
    (its key is `practice_keys[practice]`: the sandbox names it `practice + 1`)."""
    one = usage["practice_keys"].get(str(practice + 1))
    if one is None:
        return {}, {}
    start = one["from_s"]
    return ({start + i: n for i, n in enumerate(one["granted_per_s"])},
            {start + i: n for i, n in enumerate(one["throttled_per_s"])})


def calling_seconds(usage: dict[str, Any], practice: int) -> tuple[int, int]:
    """The first and last second in which practice `practice` was granted a call."""
    granted, _ = per_second(usage, practice)
    seconds = [s for s, n in granted.items() if n]
    return min(seconds), max(seconds)


def window(usage: dict[str, Any], which: list[int], start_s: int, end_s: int) -> Window:
    """What the budget did for practices `which` in seconds [start_s, end_s)."""
    granted, throttled = [], 0
    for k in which:
        g, t = per_second(usage, k)
        granted.append(sum(n for s, n in g.items() if start_s <= s < end_s))
        throttled += sum(n for s, n in t.items() if start_s <= s < end_s)
    return Window(start_s, end_s, usage["rate_budget"], granted, throttled)


def all_calling(usage: dict[str, Any], which: list[int], *, since_s: int = 0) -> Window:
    """The window in which every practice of `which` was calling (from `since_s` on):
    from the second after the last of them was first granted a call to the second
    before the first of them was last granted one (the partial seconds left out)."""
    spans = [calling_seconds(usage, k) for k in which]
    start = max(since_s, max(s for s, _ in spans) + 1)
    return window(usage, which, start, min(e for _, e in spans))


@dataclass
class FleetResult:
    budget: float
    outcomes: list[Outcome]
    accepted: int  # API calls the sandbox accepted
    refused: int  # API calls it answered 429
    records_created: int
    files: int
    calling: tuple[float, float]  # when the sandbox accepted the first and last API call
    usage: dict[str, Any]  # the sandbox's `usage`: each practice's calls per second
    span_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.span_s = self.calling[1] - self.calling[0]

    @property
    def used(self) -> float:
        """Accepted API calls per second while the fleet ran, as a share of the budget."""
        return self.accepted / self.span_s / self.budget

    @property
    def throttled(self) -> float:
        return self.refused / max(1, self.accepted + self.refused)

    def spread(self, which: list[int] | None = None) -> float:
        """The longest run over the shortest, among `which` (equal work)."""
        durations = [self.outcomes[i].duration for i in (which or range(len(self.outcomes)))]
        return max(durations) / min(durations)

    def share_of_calls(self) -> list[float]:
        """Each practice's API calls per second of its own run (equal work: alike)."""
        return [o.report.get("api", {}).get("calls", 0) / o.duration for o in self.outcomes]

    def as_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "processes": len(self.outcomes), "files": self.files,
                "span_s": round(self.span_s, 1), "used_of_budget": round(self.used, 3),
                "throttled_share": round(self.throttled, 4), "spread": round(self.spread(), 3),
                "durations_s": [round(o.duration, 1) for o in self.outcomes],
                "api_accepted": self.accepted, "api_429": self.refused,
                "records_created": self.records_created,
                "validated": sum(o.report["summary"].get("validated", 0)
                                 for o in self.outcomes),
                "exit_codes": [o.code for o in self.outcomes],
                "all_calling": self.all_calling_figures()}

    def all_calling_figures(self) -> dict[str, Any]:
        """`Window.as_dict` of the seconds when every practice was calling ({} if one
        was never granted a call)."""
        try:
            return all_calling(self.usage, list(range(len(self.outcomes)))).as_dict()
        except ValueError:  # a practice without a granted call: no such window
            return {}


def api_requests(stats: dict[str, Any]) -> tuple[int, int]:
    """(accepted, refused with 429) API requests the sandbox saw."""
    accepted = refused = 0
    for kind, codes in stats["requests"].items():
        if kind.startswith("s3_"):
            continue
        for code, n in codes.items():
            if code == "429":
                refused += n
            else:
                accepted += n
    return accepted, refused


def fleet_sandbox(budget: float, practices: int) -> SandboxOptions:
    """One vendor key whose budget is `budget` requests/s, `practices` practice keys."""
    return SandboxOptions(validation_delay_s=0.2, rate_budget=budget, record_requests=False,
                          throttle_style=ThrottleStyle.GATEWAY,
                          practice_keys=tuple(f"practice-{k}-{os.urandom(8).hex()}"
                                              for k in range(practices)))


def write_practice(root: Path, sb: Sandbox, k: int, files: int, shared_limit: str,
                   rate: str | float) -> tuple[Path, Path]:
    """Practice `k`'s folder, files, manifest and config: (config, manifest)."""
    root.mkdir(parents=True)
    clients = [str(1 + k * CLIENTS_PER_PRACTICE + j) for j in range(CLIENTS_PER_PRACTICE)]
    manifest = write_manifest(root, make_files(root, files, clients,
                                               names=[f"p{k}-letter.pdf"]))
    api: dict[str, object] = {"practice_api_key": sb.options.practice_keys[k],
                              "requests_per_second": rate, "max_attempts": 30}
    if shared_limit:  # the rate is then the fleet's: let it reach the vendor key's budget
        budget = sb.options.rate_budget
        api.update(shared_limit=shared_limit, max_requests_per_second=max(20.0, 2 * budget))
    cfg = config(root, sb, api=api, reconcile={"deadline_s": 120, "poll_interval_s": 0.3})
    return cfg, manifest


async def run_practice(root: Path, cfg: Path, manifest: Path, delay: float,
                       limit_s: float, worker_src: Path | None = None) -> Outcome:
    await asyncio.sleep(delay)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
    if worker_src is not None:  # another checkout's worker (bench/fleet.py's baseline)
        env["PYTHONPATH"] = str(worker_src)
    spawned = time.time()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pracsuite_ingest", "run", "--config", str(cfg), "--manifest",
        str(manifest), cwd=root, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), limit_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    ended = time.time()
    assert proc.returncode is not None
    latest = root / "reports" / "latest.json"
    report = json.loads(latest.read_text()) if latest.exists() else {"summary": {}}
    return Outcome(proc.returncode, run_started(err.decode()) or spawned, ended, report,
                   err.decode())


def run_started(stderr: str) -> float | None:
    """When the run's "run started" line was logged (its JSON timestamp), if it was:
    a process's start-up (imports, seconds of CPU on a loaded machine) is not its run."""
    for line in stderr.splitlines():
        if '"run started"' in line:
            stamp = json.loads(line)["timestamp"].replace("Z", "+00:00")
            return datetime.fromisoformat(stamp).timestamp()
    return None


async def watch_calls(sb: Sandbox, done: asyncio.Event) -> tuple[float, float]:
    """When the sandbox accepted its first and its last API call (sampled every 0.1 s):
    the time the fleet was calling, without the processes' start-up (seconds of CPU on
    a loaded machine) and the last wait for validation."""
    first = last = None
    seen = 0
    while not done.is_set():
        accepted, _ = api_requests(sb.stats())
        now = time.monotonic()
        if accepted > seen:
            first = first if first is not None else now
            last, seen = now, accepted
        await asyncio.sleep(0.1)
    assert first is not None and last is not None, "no API call reached the sandbox"
    return first, last


async def run_fleet(root: Path, practices: list[Practice], *, budget: float,
                    shared_limit: str = "", rate: str | float = "auto",
                    limit_s: float = 240.0, during: Any = None,
                    worker_src: Path | None = None) -> FleetResult:
    """Every practice's `run` at once (each after its `start_after_s`) against one
    sandbox; `during(sandbox)`, if given, runs alongside (e.g. kills Redis)."""
    done = asyncio.Event()
    async with Sandbox(fleet_sandbox(budget, len(practices))) as sb:
        setups = [write_practice(root / f"practice-{k}", sb, k, p.files, shared_limit, rate)
                  for k, p in enumerate(practices)]
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(run_practice(root / f"practice-{k}", cfg, manifest,
                                                 p.start_after_s, limit_s, worker_src))
                     for k, (p, (cfg, manifest)) in enumerate(zip(practices, setups,
                                                                 strict=True))]
            if during is not None:
                tg.create_task(during(sb))
            calling = tg.create_task(watch_calls(sb, done))
            await asyncio.gather(*tasks)
            done.set()
        stats = sb.stats()
    accepted, refused = api_requests(stats)
    return FleetResult(budget, [t.result() for t in tasks], accepted, refused,
                       stats["records_created_total"], sum(p.files for p in practices),
                       calling.result(), stats["usage"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def redis_server(program: str, workdir: Path) -> AsyncIterator[RedisProcess]:
    """A throwaway redis-server on a free loopback port, killed at the end."""
    server = RedisProcess(program, free_port(), workdir)
    await server.start()
    try:
        yield server
    finally:
        server.kill()


class RedisProcess:
    def __init__(self, program: str, port: int, workdir: Path) -> None:
        self.program, self.port, self.workdir = program, port, workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - started once, killed at the end
            [self.program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError(f"redis-server did not listen on {self.port} within 30 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
