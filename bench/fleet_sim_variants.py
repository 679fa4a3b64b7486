"""Fair shares without coordination: "auto" and variants synchronised by the wall clock.

    .venv/bin/python bench/fleet_sim_variants.py [--seeds 30] [--only NAME ...]

Issue 24 asks that processes pacing themselves (`requests_per_second = "auto"`, no Redis)
share one budget: four processes within 1.3x of each other, <= 5 % throttled. Every
tuning of `AutoRate` left four processes 1.3-1.5x apart in a test-length window
(docs/scale-out.md): a token bucket refuses a trickle, so each congestion event cuts ONE
process, and AIMD's convergence (every process cut by the same factor in one event)
does not happen in a short run. The idea tried here: synchronise the events through
the wall clock, which every process shares (NTP) without talking. In the simulation
the wall clock is the simulated time; every case puts the processes' starts at a random
phase of the epochs (a real fleet does not start on a whole second).

Variants (each a pure policy the simulator drives, as it drives `AutoRate`):
- `epoch climb`: the additive increase in steps at wall-clock epochs (every P s all
  processes raise together, at the same instant).
- `+ probe k`: and at every epoch's start each process sends k calls at that instant
  (its schedule bends to the boundary), so that when the budget is spent the refusals
  land on every process at once.
- `epoch AIMD`: the probe decides: a 429 on a call sent at an epoch's start cuts by
  beta; a 429 elsewhere pauses one spacing and cuts only if `tolerate` of them came in
  one epoch; the climb is a step at each epoch's start.
- `+ lockstep start`: the start's climb (x1.5 a second) in steps at the epoch
  boundaries instead of continuously, so processes that started within one epoch have
  the same rate when the budget first refuses them.

Cases (the docs' table): four processes on 32/s starting up to 1 s apart, the shares of
what the budget granted in the 17 s after the last one started (30 seeds: median, 80th
percentile, worst; how many runs within 1.3x; calls throttled); the same starting at
once; eight on 16/s over 60 s (10 seeds: throttled, shares median / worst); one alone
on 16/s, the share of the budget it used in its first 20 s; a practice joining at 4-5 s
and one leaving at 12 s (as tests/test_fleet.py: the three's shares in the 7 s after
the leave, median / worst, and the fleet's use from the join to 19 s). Pure and
repeatable: simulated time (tests/fleet_sim.py), no CPU in the way, so no load figure
is needed; writes bench/results/<time>-fleet-sim-variants.txt.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from fleet_sim import Policy, Shares, shares, simulate  # noqa: E402
from pracsuite_ingest.rate_gate import HOLD_S, START_GROWTH_PER_S, AutoRate  # noqa: E402

EPS = 1e-9


def epoch_of(t: float, period: float) -> int:
    return math.floor(t / period + EPS)


def at_boundary(t: float, period: float) -> bool:
    return abs(t - round(t / period) * period) < EPS


@dataclass
class EpochClimb(AutoRate):
    """AutoRate, its climb after the first 429 applied in steps at epoch boundaries;
    with `probe` k, k calls go at each boundary's instant."""

    period: float = 1.0
    probe: int = 0
    _pending: float = 0.0
    _epoch: int = -1
    _probed: int = 0

    def succeeded(self, now: float, *, busy: bool = True) -> None:
        before = self.rate
        climbing = self.last_429_rate is not None
        super().succeeded(now, busy=busy)
        if not climbing:
            return
        self._pending += self.rate - before
        self.rate = before
        epoch = epoch_of(now, self.period)
        if epoch != self._epoch:
            self._epoch = epoch
            self.rate = min(self.ceiling, self.rate + self._pending)
            self._pending = 0.0

    def throttled_at(self, now: float, sent_at_rate: float | None = None) -> float:
        self._pending = 0.0
        return super().throttled_at(now, sent_at_rate)

    def next_send_at(self, sent_at: float) -> float:
        nxt = sent_at + self.interval_s
        if not self.probe:
            return nxt
        if at_boundary(sent_at, self.period):
            self._probed += 1
            if self._probed < self.probe:
                return sent_at
        self._probed = 0
        return min(nxt, (epoch_of(sent_at, self.period) + 1) * self.period)


@dataclass
class EpochAimd(AutoRate):
    """After the first 429: a call at every epoch boundary (the probe); a 429 answered
    within `probe_window` of a boundary cuts by `beta`; one elsewhere pauses one spacing
    and cuts only as the `tolerate`-th in its epoch; the climb is `step` requests/s at
    each boundary while busy. `lockstep_start`: the start's climb in steps at the
    boundaries."""

    period: float = 1.0
    beta: float = 0.75
    step: float = 0.1
    tolerate: int = 3
    probe_window: float = 0.15
    lockstep_start: bool = False
    _epoch: int = -1
    _stray: int = 0
    _climbed: int = -1
    _started: float | None = None

    def succeeded(self, now: float, *, busy: bool = True) -> None:
        if self.decreases == 0:
            if not self.lockstep_start:
                super().succeeded(now, busy=busy)
                return
            self._start_step(now, busy=busy)
            return
        epoch = epoch_of(now, self.period)
        if epoch != self._climbed:
            self._climbed = epoch
            if busy:
                self.rate = min(self.ceiling, self.rate + self.step)

    def _start_step(self, now: float, *, busy: bool) -> None:
        """x(1 + START_GROWTH) per second, applied at each boundary crossed."""
        epoch = epoch_of(now, self.period)
        if self._climbed < 0:
            self._climbed = epoch
            return
        steps = epoch - self._climbed
        self._climbed = epoch
        if busy and steps > 0:
            growth = (1 + START_GROWTH_PER_S) ** (self.period * steps)
            self.rate = min(self.ceiling, self.rate * growth)

    def throttled_at(self, now: float, sent_at_rate: float | None = None) -> float:
        if self.decreases == 0:
            self._climbed = epoch_of(now, self.period)
            return super().throttled_at(now, sent_at_rate)
        self.throttled += 1
        over = sent_at_rate if sent_at_rate is not None else self.rate
        epoch = epoch_of(now, self.period)
        if epoch != self._epoch:
            self._epoch, self._stray = epoch, 0
        probe = now - epoch * self.period < self.probe_window
        held = over > self.rate or (self._decreased_at is not None
                                    and now - self._decreased_at < HOLD_S)
        if not probe:
            self._stray += 1
        if held or (not probe and self._stray < self.tolerate):
            return self.interval_s
        self.last_429_rate = over
        self.rate = max(self.floor, over * self.beta)
        self._decreased_at = now
        self.decreases += 1
        self._climbed = epoch  # no climb at this boundary
        return self.interval_s

    def next_send_at(self, sent_at: float) -> float:
        if self.decreases == 0 and not self.lockstep_start:
            return sent_at + self.interval_s
        return min(sent_at + self.interval_s, (epoch_of(sent_at, self.period) + 1) * self.period)


Make = Callable[[float], Policy]


def variants() -> dict[str, Make]:
    out: dict[str, Make] = {"AutoRate as on main": lambda c: AutoRate(ceiling=c)}
    for p in (1.0, 2.0):
        out[f"epoch climb, P={p:g} s"] = lambda c, p=p: EpochClimb(ceiling=c, period=p)
        for k in (1, 3):
            out[f"epoch climb + probe {k}, P={p:g} s"] = (
                lambda c, p=p, k=k: EpochClimb(ceiling=c, period=p, probe=k))
    for p in (0.5, 1.0, 2.0):
        for beta in (0.75, 0.85):
            for step in (0.1, 0.2):
                name = f"epoch AIMD, P={p:g} s, beta {beta}, climb {step}/s"
                out[name] = lambda c, p=p, b=beta, s=step: EpochAimd(
                    ceiling=c, period=p, beta=b, step=s * p)
    for p in (0.5, 1.0):
        for beta in (0.75, 0.85):
            out[f"epoch AIMD + lockstep start, P={p:g} s, beta {beta}, climb 0.1/s"] = (
                lambda c, p=p, b=beta: EpochAimd(ceiling=c, period=p, beta=b, step=0.1 * p,
                                                 lockstep_start=True))
    return out


def four(make: Make, seed: int, apart: float = 1.0) -> Shares:
    rng = random.Random(seed)
    phase = rng.uniform(0.0, 2.0)  # where the starts fall among the epochs
    starts = [phase + rng.uniform(0.0, apart) for _ in range(4)]
    last = max(starts)
    calls = simulate(32.0, [(s, last + 20.0) for s in starts], seed=seed, policy=make)
    return shares(calls, 32.0, [0, 1, 2, 3], last, last + 17.0)


def eight(make: Make, seed: int) -> Shares:
    phase = random.Random(seed).uniform(0.0, 2.0)
    calls = simulate(16.0, [(phase, phase + 60.0)] * 8, seed=seed, policy=make)
    return shares(calls, 16.0, list(range(8)), phase, phase + 60.0)


def alone(make: Make, seed: int) -> Shares:
    phase = random.Random(seed).uniform(0.0, 2.0)
    calls = simulate(16.0, [(phase, phase + 20.0)], seed=seed, policy=make)
    return shares(calls, 16.0, [0], phase, phase + 20.0)


def join_leave(make: Make, seed: int) -> tuple[Shares, Shares]:
    """0, 1 throughout; 2 leaves at 12 s; 3 joins at 4-5 s (tests/test_fleet.py's shape).
    (the three's shares in the 7 s after the leave, the fleet's from the join to 19 s)"""
    rng = random.Random(seed)
    phase = rng.uniform(0.0, 2.0)
    join = phase + 4.0 + rng.uniform(0.0, 1.0)
    spans = [(phase, phase + 30.0), (phase, phase + 30.0), (phase, phase + 12.0),
             (join, phase + 30.0)]
    calls = simulate(32.0, spans, seed=seed, policy=make)
    return (shares(calls, 32.0, [0, 1, 3], phase + 12.0, phase + 19.0),
            shares(calls, 32.0, [0, 1, 2, 3], join, phase + 19.0))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def row(name: str, make: Make, seeds: int) -> str:
    f = [four(make, s) for s in range(seeds)]
    at_once = [four(make, s, apart=0.0) for s in range(seeds)]
    e = [eight(make, s) for s in range(10)]
    a = [alone(make, s) for s in range(10)]
    jl = [join_leave(make, s) for s in range(seeds)]
    sp = [x.spread for x in f]
    once = [x.spread for x in at_once]
    three = [t.spread for t, _ in jl]
    return (f"| {name} | {statistics.median(sp):.2f}x / {pct(sp, 0.8):.2f}x / {max(sp):.2f}x"
            f" | {sum(x <= 1.3 for x in sp)}/{seeds}"
            f" | {statistics.mean(x.throttled for x in f):.1%}"
            f" | {statistics.median(once):.2f}x / {pct(once, 0.8):.2f}x"
            f" | {statistics.mean(x.throttled for x in e):.1%},"
            f" {statistics.median(x.spread for x in e):.2f}x / {max(x.spread for x in e):.2f}x"
            f" | {statistics.mean(x.used for x in a):.0%}"
            f" | {statistics.median(three):.2f}x / {max(three):.2f}x,"
            f" {min(u.used for _, u in jl):.0%}-{max(u.used for _, u in jl):.0%}"
            f" {statistics.mean(u.throttled for _, u in jl):.1%} |")


HEADER = ("| policy | four on 32/s: shares apart, median / 80th pct / worst | within 1.3x"
          " | throttled | four starting at once: median / 80th pct"
          " | eight on 16/s, 60 s: throttled, shares median / worst"
          " | alone on 16/s: used in 20 s | join + leave: three after the leave median /"
          " worst, fleet used, throttled |\n|---|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--only", nargs="*", help="variants whose name contains one of these")
    args = ap.parse_args()
    lines = [f"fleet_sim_variants {datetime.now(UTC):%Y-%m-%dT%H:%MZ}, {args.seeds} seeds"
             " (simulated time: no load figure applies)", "", HEADER]
    print("\n".join(lines), flush=True)
    for name, make in variants().items():
        if args.only and not any(o in name for o in args.only) and name != "AutoRate as on main":
            continue
        lines.append(row(name, make, args.seeds))
        print(lines[-1], flush=True)
    out = REPO / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%dT%H-%M-%SZ}-fleet-sim-variants.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
