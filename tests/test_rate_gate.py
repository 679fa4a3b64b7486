"""One process-wide rate limit that a 429 slows for every caller, and that recovers."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from fleet_sim import shares, simulate
from pracsuite_ingest.rate_gate import (
    DECREASE,
    FIRST_DECREASE,
    FIRST_PAUSE_S,
    HOLD_S,
    OVERSHOT,
    AutoRate,
    RateGate,
    recovered_interval,
    slowed_interval,
)
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.sandbox.faults import ThrottleStyle


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


# ---------------------------------------------------------------- "auto" (rate_gate.AutoRate)
# PracSuite's limit is played by a token bucket of `budget` requests/s holding `capacity`
# tokens; time is simulated (every call is spaced as the policy says), so these are
# exact, repeatable figures of the policy, not timings of this machine.

def bucket_run(budget: float, capacity: float, calls: int, gates: list[AutoRate],
               accepted: list[int] | None = None) -> tuple[float, float]:
    """(share of the budget used, share of calls throttled) over `calls` accepted calls,
    the `gates` (one per shard or process) sending in turn to one bucket; `accepted`, if
    given, counts each gate's accepted calls."""
    tokens, filled, ok, refused = capacity, 0.0, 0, 0
    next_at = [0.0 for _ in gates]
    per_gate = accepted if accepted is not None else [0] * len(gates)
    t = 0.0
    while ok < calls:
        i = min(range(len(gates)), key=lambda k: next_at[k])
        t = next_at[i]
        tokens, filled = min(capacity, tokens + (t - filled) * budget), t
        sent_at = gates[i].rate
        if tokens >= 1:
            tokens -= 1
            ok += 1
            per_gate[i] += 1
            gates[i].succeeded(t)
        else:
            refused += 1
            gates[i].throttled_at(t, sent_at)
        next_at[i] = t + gates[i].interval_s
    return ok / t / budget, refused / (ok + refused)


@pytest.mark.parametrize("budget", [5.0, 20.0])
@pytest.mark.parametrize("burst", ["one call", "one second"])
def test_auto_uses_most_of_an_unknown_budget_and_is_rarely_throttled(
        budget: float, burst: str) -> None:
    # 600 files: a presign, a presign_url and a share of the list calls each: 1,800 calls
    capacity = 1.0 if burst == "one call" else budget
    used, throttled = bucket_run(budget, capacity, 1800, [AutoRate(ceiling=100.0)])
    assert used >= 0.8, f"used {used:.0%} of {budget}/s"
    assert throttled <= 0.05, f"{throttled:.1%} of calls throttled"


def test_auto_never_goes_above_the_maximum() -> None:
    gate = AutoRate(ceiling=20.0)
    for second in range(60):  # a minute without a single 429
        gate.succeeded(float(second))
    assert gate.rate == 20.0
    used, throttled = bucket_run(1000.0, 1000.0, 600, [AutoRate(ceiling=20.0)])
    assert used * 1000.0 <= 20.0 and throttled == 0


def test_auto_starts_at_three_per_second_and_a_burst_of_429s_is_one_step_back() -> None:
    gate = AutoRate(ceiling=50.0)
    assert gate.rate == 3.0
    for second in range(1, 6):
        gate.succeeded(float(second))
    sent_at = gate.rate
    gate.throttled_at(6.0, sent_at)
    lowered = gate.rate
    # the calls that were in flight at the old rate come back 429 too: no further step
    for _ in range(5):
        gate.throttled_at(6.1, sent_at)
    # the first 429 ends the start's climb, which the budget's burst let run past it
    assert lowered == pytest.approx(FIRST_DECREASE * sent_at)
    assert gate.rate == lowered and gate.decreases == 1 and gate.throttled == 6
    # a call sent at the lowered rate and refused once the hold is over: lower still
    gate.throttled_at(6.0 + HOLD_S + 0.1, gate.rate)
    assert gate.rate < lowered and gate.decreases == 2


def test_a_process_refused_at_its_start_rate_steps_back_and_climbs_on_one_that_overshot_halves(
        ) -> None:
    # joining a fleet that fills the budget: the very first calls are refused, at 3/s;
    # halving and pausing a second (what a start that ran past the limit on the budget's
    # burst needs) would leave the joiner at 1.5/s for most of a run
    joiner = AutoRate(ceiling=20.0)
    joiner.succeeded(0.0)
    assert joiner.throttled_at(0.2, 3.0) == pytest.approx(1 / (3.0 * DECREASE))
    assert joiner.rate == pytest.approx(3.0 * DECREASE)
    # ... and its start's climb goes on (+50% a second), towards its share of the budget
    joiner.succeeded(1.2)
    assert joiner.rate == pytest.approx(3.0 * DECREASE * 1.5)
    # its next 429 is an ordinary step back, and from there the slow climb
    joiner.throttled_at(1.3, joiner.rate)
    assert joiner.rate == pytest.approx(3.0 * DECREASE * 1.5 * DECREASE)
    assert joiner.last_429_rate == pytest.approx(3.0 * DECREASE * 1.5)
    # the start's climb ran past OVERSHOT x 3/s: halve, and pause a second
    starter = AutoRate(ceiling=20.0)
    for second in range(4):
        starter.succeeded(float(second))
    sent_at = starter.rate
    assert sent_at >= OVERSHOT * 3.0
    assert starter.throttled_at(4.0, sent_at) == FIRST_PAUSE_S
    assert starter.rate == pytest.approx(FIRST_DECREASE * sent_at)


def test_shards_adapting_on_their_own_stay_under_the_limit_together() -> None:
    # two shards, each with half the maximum (shard.apply), one PracSuite limit of 10/s
    gates = [AutoRate(ceiling=10.0), AutoRate(ceiling=10.0)]
    used, throttled = bucket_run(10.0, 10.0, 1800, gates)
    # never more than PracSuite allows (beyond the bucket's initial second of burst)
    assert 0.8 <= used <= 1.0 + 10.0 / 1800, f"used {used:.1%}"
    assert throttled <= 0.05, f"{throttled:.1%} throttled"


# Fleets on the sandbox's own budget, with answers coming back after random latencies
# (fleet_sim.py). Equal shares come from additive increase and multiplicative decrease
# alone: each process learns where it stands only from its own few 429s, so shares even
# out over minutes, not seconds (over one minute, 10 seeds: 1.1x-2.0x apart; see
# docs/scale-out.md). These hold the policy to the bounds over ten minutes.
BUDGET = 16.0  # the fleet bench's (bench/fleet.py)


def test_the_simulated_budget_decides_in_the_order_calls_reach_it() -> None:
    # two processes send their first calls at the same instant into a budget holding one
    # token: the call that reaches it first has it, whichever process sent it (the
    # simulation used to decide in the order of sending: process 0 always had it, and
    # every process calling on the same wall-clock instants looked fair)
    for seed in range(20):
        calls = simulate(1.0, [(0.0, 0.2), (0.0, 0.2)], seed=seed)
        assert len(calls) == 2
        assert [c.granted for c in sorted(calls, key=lambda c: c.at)] == [True, False], calls


@pytest.mark.parametrize("seed", [1, 2])
def test_four_processes_on_one_key_each_adapting_alone_converge_to_equal_shares(
        seed: int) -> None:
    # four practices on one vendor key (API Gateway throttles per key), none knowing the
    # others: the climb is the same requests/s for each, the step back a share of each
    # one's rate, so the shares even out
    calls = simulate(BUDGET, [(0.0, 600.0)] * 4, seed=seed)
    got = shares(calls, BUDGET, [0, 1, 2, 3], 0.0, 600.0)
    assert got.used >= 0.8 and got.throttled <= 0.05, got
    assert got.spread <= 1.3, got


@pytest.mark.parametrize("seed", [2, 5])
def test_a_process_joining_late_and_one_leaving_early_get_and_give_up_their_share(
        seed: int) -> None:
    # 0 and 1 run ten minutes; 2 leaves after five; 3 joins after one. The joiner climbs
    # from 3/s into a budget the others fill: it gains on them only as they meet 429s,
    # so its phase is held to 1.5x; once 2 has left, the others take its share, held to
    # 1.5x too. 10 seeds, the budget deciding in the order calls reach it (fleet_sim.py):
    # the four 1.03x-1.36x over those four minutes, the three 1.09x-1.43x over the last
    # five. The three were held to the 1.3x while the simulation decided in the
    # order calls were sent (then 1.03x-1.32x: over 1.3x in 1 of 10 seeds, not 2 or 5;
    # now in 3 of 10, seed 5 among them at 1.33x): it is not a bound this policy keeps.
    spans = [(0.0, 600.0), (0.0, 600.0), (0.0, 300.0), (60.0, 600.0)]
    calls = simulate(BUDGET, spans, seed=seed)
    four = shares(calls, BUDGET, [0, 1, 2, 3], 60.0, 300.0)
    three = shares(calls, BUDGET, [0, 1, 3], 300.0, 600.0)
    for got in (four, three):
        assert got.used >= 0.8 and got.throttled <= 0.05, got
    assert four.spread <= 1.5, four
    assert three.spread <= 1.5, three


def test_in_a_test_length_join_and_leave_the_fleet_pacing_itself_uses_most_of_the_budget(
        ) -> None:
    # test_fleet.py's case paced alone, in simulated time: 0 and 1 run 21.5 s, 2 leaves
    # at 8.3 s, 3 joins at 4 s; the fleet's use from the joiner's first second to 21.5 s.
    # 1,000 seeds: median 93%, 3.9% under the 80%, 0.5% under 70%, lowest 67.6%
    # (a joiner refused in the others' burst climbs slowly into the leaver's share). Held
    # here over 200 seeds, as test_fleet.py holds the real processes (JOIN_PACED_...).
    budget = 32.0  # test_fleet.py's
    used = []
    for seed in range(200):
        calls = simulate(budget, [(0.0, 21.5), (0.0, 21.5), (0.0, 8.3), (4.0, 34.0)],
                         seed=seed)
        first = min(c.at for c in calls if c.process == 3)
        used.append(shares(calls, budget, [0, 1, 2, 3], first + 1.0, 21.5).used)
    assert min(used) >= 0.65, sorted(used)[:5]
    assert sum(u < 0.8 for u in used) <= 0.06 * len(used), sorted(used)[:12]
    assert sorted(used)[len(used) // 2] >= 0.9, sorted(used)[len(used) // 2]


async def test_the_auto_gate_hands_the_rate_a_call_was_sent_at_back_with_its_429() -> None:
    gate = RateGate.for_setting("auto", 20.0)
    assert gate.auto is not None and gate.rate == 3.0
    async with gate as sent_at:
        pass
    gate.throttle(None, sent_at)
    assert sent_at == 3.0
    assert gate.auto.decreases == 1
    # refused at the start rate: a fleet already fills the budget, an ordinary step back
    assert gate.rate == pytest.approx(3.0 * DECREASE)


async def test_a_429_holds_back_the_callers_waiting_at_the_auto_gate() -> None:
    # "auto" at 3/s: four callers wait their turn a third of a second apart; the first
    # call's 429 (at the start rate: step back to 0.75, pause one spacing) comes back
    # while the others wait. They go behind the pause at the lowered rate, not at the
    # spacing of the rate that was refused (into a budget that is empty)
    gate = RateGate.for_setting("auto", 20.0)
    started = time.monotonic()
    sent: list[float] = []

    async def one(first: bool) -> None:
        async with gate as rate:
            sent.append(time.monotonic() - started)
            if first:
                await asyncio.sleep(0.05)  # its answer's round trip
                gate.throttle(None, rate)

    await asyncio.gather(one(True), one(False), one(False), one(False))
    lowered = 3.0 * DECREASE
    assert gate.rate == lowered
    # a call goes no earlier than its slot: the pause, then one spacing at the new rate
    for k, at in enumerate(sorted(sent[1:])):
        assert at >= 0.05 + (k + 1) / lowered - 0.01, sent


@pytest.mark.slow
async def test_an_auto_run_against_a_rate_limit_climbs_backs_off_and_loses_nothing(
        tmp_path: Path) -> None:
    # PracSuite played with a limit of 15 requests/s (429 above it, API Gateway's bare
    # answer); "auto" starts at 3/s, must climb past it, meet 429s, and end with every
    # row validated once, its pace in the log, the summary and the report.
    opts = SandboxOptions(validation_delay_s=0.1, rate_budget=15.0,
                          throttle_style=ThrottleStyle.GATEWAY, seed=3)
    rows = 36
    async with Sandbox(opts) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, rows, ["1", "2", "3"]))
        cfg = config(tmp_path, sb, api={"requests_per_second": "auto",
                                        "max_requests_per_second": 40.0, "max_attempts": 10})
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        stats = sb.stats()
    assert result.code == 0, result.stderr[-3000:]
    report = result.report(tmp_path / "reports")
    assert report["summary"]["validated"] == rows
    assert stats["records_created_total"] == rows
    pace = report["api"]
    assert pace["mode"] == "auto" and 3.0 < pace["requests_per_second"] <= 40.0
    assert pace["throttled"] == stats["faults"].get("api_429", 0) > 0  # it met the limit
    assert "auto rate settled at" in result.stdout, result.stdout
    logged = [json.loads(line) for line in result.stderr.splitlines() if '"api pace"' in line]
    assert logged and logged[-1]["mode"] == "auto"


def test_auto_does_not_climb_on_a_rate_nobody_used() -> None:
    gate = AutoRate(ceiling=40.0)
    for second in range(30):  # half a minute of answers, but callers never waited
        gate.succeeded(float(second), busy=False)
    assert gate.rate == 3.0
    gate.succeeded(30.5, busy=True)
    assert gate.rate > 3.0


async def test_callers_waiting_at_the_auto_gate_go_at_the_rate_it_climbed_to_meanwhile(
        ) -> None:
    # Eight callers arrive at once at "auto"'s start rate (3/s); once the first has
    # gone, the rate climbs (as successes while callers wait make it). Each later caller
    # must go at the rate in force when its turn comes, and say so (the rate its 429
    # would hand back). The gate used to hand each caller a slot as it arrived, at the
    # rate of that moment: seven slots at 3/s, 2.3 s of them, every one sent "at 3/s",
    # so a run sat at 3 calls/s for its first seconds whatever "auto" had climbed to
    # (docs/scale-out.md).
    gate = RateGate.for_setting("auto", 50.0)
    assert gate.auto is not None and gate.rate == 3.0
    order: list[int] = []
    rates: list[float] = []

    async def one(n: int) -> None:
        async with gate as rate:
            order.append(n)
            rates.append(rate)

    async with asyncio.TaskGroup() as tg:
        for n in range(8):
            tg.create_task(one(n))
            await asyncio.sleep(0)  # they arrive in this order
        await asyncio.sleep(0.05)  # the first has gone, the seven wait
        assert order == [0]
        gate.auto.rate = 40.0  # the climb
    assert order == list(range(8))  # first come, first served
    assert rates == [3.0] + [40.0] * 7, rates
