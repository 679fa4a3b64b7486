"""Several practices on one vendor key (API Gateway throttles per key): real `run`
processes, each with its own config, state and practice key, share ONE sandbox budget.

What a test can hold on any machine: every file of every practice validated exactly
once (nothing lost, nothing sent twice), on a shared limit in Redis, with practices
joining late and leaving early, and with Redis killed mid-run. How well the budget is
shared (share used, calls throttled, equal work finishing how far apart) is a ratio of
wall times on a machine whose CPU the fleet shares with everything else: on a loaded
2-core machine the same code measured 1.06x and 2.9x apart. Those figures are
measured, not asserted: `make bench-fleet` prints them beside main's worker
(bench/README.md), and `tests/test_rate_gate.py` holds the "auto" policy to the issue's
bounds on a simulated bucket, where the CPU plays no part.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from fleet_runs import FleetResult, Practice, redis_server, run_fleet
from needs import program

pytestmark = pytest.mark.slow

BUDGET = 8.0
FILES = 50  # per practice: ~110 API calls each


def figures(result: FleetResult) -> str:
    return json.dumps(result.as_dict())


def assert_whole(result: FleetResult) -> None:
    """Every file validated exactly once: nothing lost, nothing sent twice."""
    assert [o.code for o in result.outcomes] == [0] * len(result.outcomes), [
        o.stderr[-2000:] for o in result.outcomes if o.code]
    for o in result.outcomes:
        summary = o.report["summary"]
        assert summary["validated"] == summary["total"], summary
    assert result.records_created == result.files, figures(result)


async def test_practices_pacing_themselves_on_one_budget_each_validate_every_file_once(
        tmp_path: Path) -> None:
    # 2 and the late 3 have the same work as 0 and 1; 1/4 of it for 2, which leaves early
    practices = [Practice(FILES), Practice(FILES), Practice(FILES // 4),
                 Practice(FILES, start_after_s=10.0)]
    result = await run_fleet(tmp_path, practices, budget=BUDGET)
    assert_whole(result)


async def test_on_a_shared_limit_practices_joining_late_and_leaving_early_validate_once(
        tmp_path: Path, redis_program: str) -> None:
    practices = [Practice(FILES), Practice(FILES), Practice(FILES // 4),
                 Practice(FILES, start_after_s=10.0)]
    async with redis_server(redis_program, tmp_path / "redis") as server:
        result = await run_fleet(tmp_path, practices, budget=BUDGET, shared_limit=server.url)
    assert_whole(result)


@pytest.fixture
def redis_program() -> str:
    return program("redis-server", package="redis-server")


async def test_four_practices_on_a_shared_limit_in_redis_stay_on_it_and_validate_once(
        tmp_path: Path, redis_program: str) -> None:
    async with redis_server(redis_program, tmp_path / "redis") as server:
        result = await run_fleet(tmp_path, [Practice(FILES) for _ in range(4)],
                                 budget=BUDGET, shared_limit=server.url)
    assert_whole(result)
    for o in result.outcomes:  # the fleet's rate, learned together, is what each reports
        assert o.report["api"]["mode"] == "auto"
        assert "shared limit unreachable" not in o.stderr


async def test_redis_killed_mid_run_the_practices_finish_on_their_own(
        tmp_path: Path, redis_program: str) -> None:
    async with redis_server(redis_program, tmp_path / "redis") as server:

        async def kill_when_calling(sb: Any) -> None:
            await wait_for_calls(sb, 60)
            server.kill()

        result = await run_fleet(tmp_path, [Practice(FILES // 2) for _ in range(4)],
                                 budget=BUDGET, shared_limit=server.url,
                                 during=kill_when_calling)
    assert_whole(result)
    for o in result.outcomes:  # each said so, without the URL's secrets or the keys
        said = [json.loads(line) for line in o.stderr.splitlines()
                if "shared limit unreachable" in line]
        assert len(said) == 1, o.stderr[-3000:]
        assert said[0]["shared_limit"] == f"redis://127.0.0.1:{server.port}/0"


async def wait_for_calls(sb: Any, calls: int) -> None:
    """Until the sandbox has answered `calls` API calls (the fleet is mid-run)."""
    from fleet_runs import api_requests

    while sum(api_requests(sb.stats())) < calls:  # noqa: ASYNC110 - polled, not signalled
        await asyncio.sleep(0.1)

