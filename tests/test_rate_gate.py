"""One process-wide rate limit that a 429 slows for every caller, and that recovers."""

from __future__ import annotations

import asyncio
import time

from pracsuite_ingest.api import RateGate, recovered_interval, slowed_interval


def test_a_429_widens_the_spacing_and_successes_narrow_it_back() -> None:
    base = 1 / 50
    interval = slowed_interval(base, base)
    assert interval >= 2 * base
    for _ in range(3):
        interval = slowed_interval(interval, base)
    assert interval <= 5.0
    widened = interval
    for _ in range(100):
        interval = recovered_interval(interval, base)
    assert widened > interval == base


def test_rare_429s_settle_near_the_configured_rate() -> None:
    base, interval = 0.02, 0.02
    for i in range(1000):  # one answer in ten is a 429
        interval = slowed_interval(interval, base) if i % 10 == 0 else recovered_interval(
            interval, base)
    assert interval < 4 * base


async def test_a_server_asked_pause_holds_every_caller() -> None:
    gate = RateGate(1000.0)
    gate.throttle(0.3)
    started = time.monotonic()

    async def one() -> float:
        async with gate:
            return time.monotonic() - started

    waits = await asyncio.gather(*(one() for _ in range(5)))
    assert min(waits) >= 0.29  # nobody went before the pause ended
    assert gate.throttled == 1
