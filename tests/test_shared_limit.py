"""api.shared_limit: one budget in Redis for every process on a vendor key (shared_limit.py),
against a real redis-server started on a free port; Redis down: the process goes on alone."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fleet_runs import RedisProcess, free_port, redis_server
from needs import program
from pracsuite_ingest.rate_gate import RateGate
from pracsuite_ingest.settings import Settings
from pracsuite_ingest.shared_limit import RETRY_S, SharedLimit, budget_key, where

VENDOR_KEY = "vendor-key-0123456789abcdef"  # what must never reach Redis or a log


def redis_now(answer: tuple[int, int]) -> float:
    """Redis's TIME (seconds, microseconds) in seconds: the clock the script reads."""
    return answer[0] + answer[1] / 1e6


class Said:
    """A structlog-style logger that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    async with redis_server(program("redis-server", package="redis-server"),
                            tmp_path / "redis") as server:
        yield server


def test_the_budget_is_keyed_by_a_hash_of_the_vendor_key_and_logs_hide_the_password(
        ) -> None:
    key = budget_key(VENDOR_KEY)
    assert VENDOR_KEY not in key and key == budget_key(VENDOR_KEY)
    assert key != budget_key(VENDOR_KEY + "x")
    assert where("redis://:s3cret@cache.internal:6380/2") == "redis://cache.internal:6380/2"
    assert where("rediss://user:pw@h/0") == "rediss://h/0"


def test_shared_limit_must_be_a_redis_url() -> None:
    with pytest.raises(ValueError, match="redis://HOST:PORT/DB"):
        Settings.model_validate({"api": {"shared_limit": "http://cache:6379"}})
    ok = Settings.model_validate({"api": {"shared_limit": "redis://cache:6379/0"}})
    assert ok.api.shared_limit == "redis://cache:6379/0"


async def test_processes_on_one_key_take_slots_of_one_budget(redis: RedisProcess) -> None:
    said = Said()
    a, b = (SharedLimit(redis.url, VENDOR_KEY, auto=False, rate=10.0, ceiling=20.0, log=said)
            for _ in range(2))
    from redis.asyncio import Redis

    client = Redis.from_url(redis.url)
    try:
        before = redis_now(await client.time())
        for i in range(20):  # two processes asking in turn, each told its slot
            got = await (a if i % 2 else b).acquire(0.0)
            assert got is not None and got[1] == 10.0
        after = redis_now(await client.time())
        # the next free slot (GCRA's theoretical arrival time) is 20 slots of 0.1 s after
        # the first call: one budget, whichever process asked
        tat = float(await client.hget(budget_key(VENDOR_KEY), "tat")) / 1000
        assert before + 2.0 <= tat <= after + 2.0
        keys = [k.decode() async for k in client.scan_iter()]
        assert keys == [budget_key(VENDOR_KEY)]  # and nothing else, the key least of all
    finally:
        await client.aclose()
        await a.aclose()
        await b.aclose()
    assert said.lines == []


async def test_a_429_one_process_meets_lowers_the_rate_for_all(redis: RedisProcess) -> None:
    said = Said()
    a, b = (SharedLimit(redis.url, VENDOR_KEY, auto=True, rate=3.0, ceiling=20.0, log=said)
            for _ in range(2))
    try:
        got = await a.acquire(0.0)
        assert got is not None and got[1] == pytest.approx(3.0, rel=0.05)
        a.throttled(got[1])
        await a.acquire(0.0)  # the 429 travels with the next slot
        after = await b.acquire(0.0)
        # the first 429 halves it (the start's climb ran past the limit on the burst)
        assert after is not None and after[1] == pytest.approx(0.5 * got[1], rel=0.05)
    finally:
        await a.aclose()
        await b.aclose()


async def test_after_the_first_429_the_shared_rate_does_not_rush_back_to_the_burst(
        redis: RedisProcess) -> None:
    # the first 429 comes when the start's climb ran past the budget on its burst: the
    # rate refused then is the burst's. Halved, the shared rate climbs slowly from there,
    # not back towards 0.9 of the refused rate within seconds (which overshot again: a
    # second storm of 429s for the whole fleet)
    said = Said()
    a = SharedLimit(redis.url, VENDOR_KEY, auto=True, rate=8.0, ceiling=40.0, log=said)
    try:
        got = await a.acquire(0.0)
        assert got is not None
        a.throttled(got[1])
        halved = await a.acquire(0.0)
        assert halved is not None and halved[1] == pytest.approx(0.5 * got[1], rel=0.05)
        started = time.monotonic()
        rate = halved[1]
        while time.monotonic() - started < 1.0:  # a second of callers queueing for slots
            again = await a.acquire(0.0)
            assert again is not None
            rate = again[1]
        assert rate <= 0.55 * got[1], (got, halved, rate)  # before: 0.6 within a second
    finally:
        await a.aclose()


async def test_redis_down_at_the_start_the_gate_paces_alone_and_asks_again_later(
        tmp_path: Path) -> None:
    said = Said()
    port = free_port()  # nothing listens there
    url = f"redis://:pw-not-logged@127.0.0.1:{port}/0"
    shared = SharedLimit(url, VENDOR_KEY, auto=True, rate=3.0, ceiling=20.0, log=said)
    gate = RateGate.for_setting("auto", 20.0, shared)
    async with gate as rate:  # the call goes ahead, at this process's own "auto" rate
        pass
    assert rate == 3.0 and gate.calls == 1
    assert len(said.lines) == 1
    event, fields = said.lines[0]
    assert "shared limit unreachable" in event
    assert fields["shared_limit"] == f"redis://127.0.0.1:{port}/0"
    assert "pw-not-logged" not in repr(said.lines) and VENDOR_KEY not in repr(said.lines)
    assert await shared.acquire(time.monotonic()) is None  # not asked again so soon
    # Redis comes up: asked again after RETRY_S, and that is said too
    server = RedisProcess(program("redis-server", package="redis-server"), port,
                          tmp_path / "redis")
    await server.start()
    try:
        got = await shared.acquire(time.monotonic() + RETRY_S)
        assert got is not None
        assert "reachable again" in said.lines[-1][0]
    finally:
        await gate.aclose()
        server.kill()
