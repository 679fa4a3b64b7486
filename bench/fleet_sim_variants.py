"""Fair shares without coordination: "auto" and variants synchronised by the wall clock.

    .venv/bin/python bench/fleet_sim_variants.py [--seeds 30] [--only NAME ...] [--all]

Issue 24 asks that processes pacing themselves (`requests_per_second = "auto"`, no Redis)
share one budget: four processes within 1.3x of each other, <= 5 % throttled. Every
tuning of `AutoRate` left four processes 1.3-1.5x apart in a test-length window
(docs/scale-out.md): a token bucket refuses a trickle, so each congestion event cuts ONE
process, and AIMD's convergence (every process cut by the same factor in one event)
does not happen in a short run. The idea tried here: synchronise the events through
the wall clock, which every process shares (NTP) without talking. In the simulation
the wall clock is the simulated time; every case puts the processes' starts at a random
phase of the epochs (a real fleet does not start on a whole second).

Variants (each a pure policy the simulator drives, as it drives `AutoRate`; in
bench/fleet_sim_policies.py):
- `control`: not synchronised: AutoRate stepping back to `beta` instead of 0.75, and/or
  with the start's overshoot halving the rate of the moment without the second's pause
  (`no first pause`: while the first ones refused paused, one process kept sending at
  the top rate and was refused only seconds later: an "escapee" with twice the others'
  rate). Says how much of a variant's gain comes from these, not from the clock.
- `sends aligned`: AutoRate unchanged but for when it sends: the send nearest each
  epoch boundary (within half a spacing) moves onto it, so every process calls at each
  boundary's instant, and on average no more often than its rate.
- `epoch climb`: the additive increase in steps at wall-clock epochs (every P s all
  processes raise together, at the same instant).
- `+ probe k`: and the sends aligned (a call of every process at each boundary); k > 1
  sends k - 1 more calls there. When the budget is
  spent, the refusals were meant to land on every process at once.
- `epoch AIMD`: the probe decides: a 429 answered within 0.15 s of a boundary cuts by
  beta; a 429 elsewhere pauses one spacing and cuts only as the third in its epoch;
  the climb is a fixed step at each boundary.
- `epoch decide`: the rate holds still for an epoch; a 429 pauses one spacing but
  leaves the rate (the overflow keeps landing, on every process in turn); at each
  boundary a process refused in the epoch steps back to beta, one that was not climbs
  (`convex climb`: faster the longer no 429 came, as AutoRate's probe). With epochs of
  4-8 s this one does synchronise the cuts.
- `sync AIMD`: AutoRate's own climbs (the start's, the slow band, the convex probe),
  applied in steps at the boundaries, with epoch AIMD's probe and rule for 429s.
- `+ lockstep start`: the start's climb (x1.5 a second) in steps at the boundaries
  instead of continuously, so processes that started within one epoch have the same
  rate when the budget first refuses them.
The column "processes cut per event" measures what synchronising was for: the step
backs of the four (after the first) grouped into events (within 0.3 s), how many
processes each cut, and how many events cut all four.

Cases (the docs' table): four processes on 32/s starting up to 1 s apart, the shares of
what the budget granted in the 17 s after the last one started (30 seeds: median, 80th
percentile, worst; how many runs within 1.3x; calls throttled; the starts at a random
phase of the epochs); the same starting at once; the four over 60 s; eight on 16/s over
60 s (10 seeds: throttled, shares median / worst); one alone on 16/s, the share of the
budget it used in its first 20 s; a practice joining at 4-5 s and one leaving at 12 s
(as tests/test_fleet.py: the three's shares in the 7 s after the leave, median / worst,
and the fleet's use from the join to 19 s). Then, for the policy as it is and with its
sends aligned, fleets of 2-20 on 16/s over 100 s, and where the budget's refusals fall.
Pure and repeatable: simulated time
(tests/fleet_sim.py), no CPU in the way, so no load figure is needed; writes
bench/results/<time>-fleet-sim-variants-<seeds>-seeds.txt.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from fleet_sim_policies import (  # noqa: E402
    Aligned,
    AlignedTuned,
    EpochAimd,
    EpochClimb,
    EpochDecide,
    SyncAimd,
    Tuned,
)

from fleet_sim import Policy, Shares, shares, simulate  # noqa: E402
from pracsuite_ingest.rate_gate import AutoRate  # noqa: E402

Make = Callable[[float], Policy]


def variants() -> dict[str, Make]:
    out: dict[str, Make] = {"AutoRate as on main": lambda c: AutoRate(ceiling=c)}
    for beta in (0.75, 0.85):
        for nfp in (False, True):
            if beta != 0.75 or nfp:
                name = f"control: AutoRate, beta {beta}" + (", no first pause" if nfp else "")
                out[name] = lambda c, b=beta, n=nfp: Tuned(ceiling=c, beta=b, no_first_pause=n)
    for p in (0.5, 1.0):
        out[f"AutoRate, sends aligned to the epochs, P={p:g} s"] = (
            lambda c, p=p: Aligned(ceiling=c, period=p))
        out[f"control + aligned: AutoRate, beta 0.85, no first pause, sends aligned, P={p:g} s"] = (
            lambda c, p=p: AlignedTuned(ceiling=c, beta=0.85, no_first_pause=True, period=p))
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
            name = f"epoch AIMD + lockstep start, no first pause, P={p:g} s, beta {beta}"
            out[name + ", climb 0.1/s"] = (
                lambda c, p=p, b=beta: EpochAimd(ceiling=c, period=p, beta=b, step=0.1 * p,
                                                 lockstep_start=True, no_first_pause=True))
            out[f"epoch AIMD, no first pause, P={p:g} s, beta {beta}, climb 0.1/s"] = (
                lambda c, p=p, b=beta: EpochAimd(ceiling=c, period=p, beta=b, step=0.1 * p,
                                                 no_first_pause=True))
    for p in (0.5, 1.0):
        for beta in (0.75, 0.85):
            for nfp in (False, True):
                name = (f"sync AIMD (AutoRate's climbs), P={p:g} s, beta {beta}"
                        + (", no first pause" if nfp else ""))
                out[name] = lambda c, p=p, b=beta, n=nfp: SyncAimd(
                    ceiling=c, period=p, beta=b, no_first_pause=n)
            out[f"sync AIMD + lockstep start, no first pause, P={p:g} s, beta {beta}"] = (
                lambda c, p=p, b=beta: SyncAimd(ceiling=c, period=p, beta=b,
                                                no_first_pause=True, lockstep_start=True))
    for p in (0.5, 1.0, 2.0):
        for beta in (0.75, 0.85):
            for step in (0.2, 0.5, 1.0):
                out[f"epoch decide, P={p:g} s, beta {beta}, climb {step}/s"] = (
                    lambda c, p=p, b=beta, s=step: EpochDecide(
                        ceiling=c, period=p, beta=b, step=s))
    for p in (4.0, 8.0):  # long epochs: the overflow lands on every process before a cut
        for beta in (0.8, 0.85):
            out[f"epoch decide, P={p:g} s, beta {beta}, climb 0.1/s"] = (
                lambda c, p=p, b=beta: EpochDecide(ceiling=c, period=p, beta=b, step=0.1))
        out[f"epoch decide, convex climb, P={p:g} s, beta 0.85, climb 0.1/s"] = (
            lambda c, p=p: EpochDecide(ceiling=c, period=p, beta=0.85, step=0.1, convex=True))
    return out


SHOWN = [  # the default table: the rows that tell the story (--all: the whole grid)
    "AutoRate as on main",
    "control: AutoRate, beta 0.85",
    "control: AutoRate, beta 0.75, no first pause",
    "control: AutoRate, beta 0.85, no first pause",
    "AutoRate, sends aligned to the epochs, P=0.5 s",
    "AutoRate, sends aligned to the epochs, P=1 s",
    "control + aligned: AutoRate, beta 0.85, no first pause, sends aligned, P=1 s",
    "epoch climb, P=1 s",
    "epoch climb, P=2 s",
    "epoch climb + probe 1, P=1 s",
    "epoch climb + probe 1, P=2 s",
    "epoch climb + probe 3, P=1 s",
    "epoch AIMD, P=0.5 s, beta 0.75, climb 0.1/s",
    "epoch AIMD, P=0.5 s, beta 0.85, climb 0.1/s",
    "epoch AIMD, P=1 s, beta 0.85, climb 0.1/s",
    "epoch AIMD + lockstep start, no first pause, P=0.5 s, beta 0.85, climb 0.1/s",
    "epoch decide, P=0.5 s, beta 0.85, climb 0.2/s",
    "epoch decide, P=2 s, beta 0.85, climb 0.2/s",
    "epoch decide, P=1 s, beta 0.75, climb 0.5/s",
    "epoch decide, P=1 s, beta 0.85, climb 1.0/s",
    "epoch decide, P=4 s, beta 0.85, climb 0.1/s",
    "epoch decide, P=8 s, beta 0.85, climb 0.1/s",
    "epoch decide, convex climb, P=4 s, beta 0.85, climb 0.1/s",
    "sync AIMD (AutoRate's climbs), P=0.5 s, beta 0.85, no first pause",
    "sync AIMD + lockstep start, no first pause, P=0.5 s, beta 0.75",
    "sync AIMD + lockstep start, no first pause, P=0.5 s, beta 0.85",
    "sync AIMD + lockstep start, no first pause, P=1 s, beta 0.85",
]


class Counted:
    """A policy, its step backs noted (time, process) after the first: how many
    processes each congestion event cut is what synchronising was meant to raise."""

    def __init__(self, inner: AutoRate, process: int, cuts: list[tuple[float, int]]) -> None:
        self.inner, self.process, self.cuts = inner, process, cuts

    @property
    def rate(self) -> float:
        return self.inner.rate

    def succeeded(self, now: float, *, busy: bool = True) -> None:
        before = self.inner.decreases  # `epoch decide` steps back at a boundary
        self.inner.succeeded(now, busy=busy)
        self._noted(now, before)

    def throttled_at(self, now: float, sent_at_rate: float | None = None) -> float:
        before = self.inner.decreases
        pause = self.inner.throttled_at(now, sent_at_rate)
        self._noted(now, before)
        return pause

    def _noted(self, now: float, before: int) -> None:
        if self.inner.decreases > before > 0:
            self.cuts.append((now, self.process))

    def next_send_at(self, sent_at: float) -> float:
        return self.inner.next_send_at(sent_at)


def cut_per_event(cuts: list[tuple[float, int]], within: float = 0.3) -> list[int]:
    """How many processes each congestion event cut (cuts within `within` s: one event)."""
    sizes: list[int] = []
    ordered = sorted(cuts)
    i = 0
    while i < len(ordered):
        j, who = i, {ordered[i][1]}
        while j + 1 < len(ordered) and ordered[j + 1][0] - ordered[i][0] < within:
            j += 1
            who.add(ordered[j][1])
        sizes.append(len(who))
        i = j + 1
    return sizes


def four_cuts(make: Make, seed: int) -> list[int]:
    """`four`'s run, its events' sizes in the 17 s window."""
    rng = random.Random(seed)
    phase = rng.uniform(0.0, 2.0)
    starts = [phase + rng.uniform(0.0, 1.0) for _ in range(4)]
    last = max(starts)
    cuts: list[tuple[float, int]] = []
    made: list[int] = []

    def counted(ceiling: float) -> Policy:
        made.append(len(made))
        inner = make(ceiling)
        assert isinstance(inner, AutoRate)
        return Counted(inner, made[-1], cuts)

    simulate(32.0, [(s, last + 17.0) for s in starts], seed=seed, policy=counted)
    return cut_per_event([c for c in cuts if c[0] >= last])


def four(make: Make, seed: int, apart: float = 1.0, window: float = 17.0) -> Shares:
    rng = random.Random(seed)
    phase = rng.uniform(0.0, 2.0)  # where the starts fall among the epochs
    starts = [phase + rng.uniform(0.0, apart) for _ in range(4)]
    last = max(starts)
    calls = simulate(32.0, [(s, last + window + 3.0) for s in starts], seed=seed, policy=make)
    return shares(calls, 32.0, [0, 1, 2, 3], last, last + window)


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
    minute = [four(make, s, window=60.0).spread for s in range(min(seeds, 30))]
    e = [eight(make, s) for s in range(10)]
    a = [alone(make, s) for s in range(10)]
    jl = [join_leave(make, s) for s in range(seeds)]
    sp = [x.spread for x in f]
    once = [x.spread for x in at_once]
    three = [t.spread for t, _ in jl]
    events = [n for s in range(seeds) for n in four_cuts(make, s)]
    return (f"| {name} | {statistics.median(sp):.2f}x / {pct(sp, 0.8):.2f}x / {max(sp):.2f}x"
            f" | {sum(x <= 1.3 for x in sp)}/{seeds}"
            f" | {statistics.mean(x.throttled for x in f):.1%}"
            f" | {statistics.mean(events):.2f}, {sum(n == 4 for n in events)}/{len(events)}"
            f" | {statistics.median(once):.2f}x / {pct(once, 0.8):.2f}x"
            f" | {statistics.median(minute):.2f}x / {pct(minute, 0.8):.2f}x"
            f" | {statistics.mean(x.throttled for x in e):.1%},"
            f" {statistics.median(x.spread for x in e):.2f}x / {max(x.spread for x in e):.2f}x"
            f" | {statistics.mean(x.used for x in a):.0%}"
            f" | {statistics.median(three):.2f}x / {max(three):.2f}x,"
            f" {min(u.used for _, u in jl):.0%}-{max(u.used for _, u in jl):.0%}"
            f" {statistics.mean(u.throttled for _, u in jl):.1%} |")


HEADER = ("| policy | four on 32/s: shares apart, median / 80th pct / worst | within 1.3x"
          " | throttled | processes cut per event (mean), events cutting all four"
          " | four starting at once: median / 80th pct"
          " | four over 60 s (30 seeds): median / 80th pct"
          " | eight on 16/s, 60 s: throttled, shares median / worst"
          " | alone on 16/s: used in 20 s | join + leave: three after the leave median /"
          " worst, fleet used, throttled |\n|---|---|---|---|---|---|---|---|---|---|")


SIZES = (2, 4, 8, 12, 20)
SIZED = ["AutoRate as on main", "AutoRate, sends aligned to the epochs, P=0.5 s",
         "AutoRate, sends aligned to the epochs, P=1 s"]
SIZES_HEADER = ("| policy | " + " | ".join(f"{n} on 16/s, 100 s" for n in SIZES)
                + " | 429s within 60 ms after a half second (eight) |\n"
                + "|---" * (len(SIZES) + 2) + "|")


def sized_row(name: str, make: Make) -> str:
    """n processes on 16/s over 100 s, 10 seeds: throttled, shares median (range); and
    where the budget's refusals fall (eight: the share within 60 ms after a boundary of
    the half seconds; by chance 12 %)."""
    cells = []
    for n in SIZES:
        runs = []
        for seed in range(10):
            phase = random.Random(seed).uniform(0.0, 2.0)
            calls = simulate(16.0, [(phase, phase + 100.0)] * n, seed=seed, policy=make)
            runs.append((calls, shares(calls, 16.0, list(range(n)), phase, phase + 100.0)))
        spreads = [got.spread for _, got in runs]
        cells.append(f"{statistics.mean(got.throttled for _, got in runs):.1%},"
                     f" {statistics.median(spreads):.2f}x ({min(spreads):.2f}-{max(spreads):.2f})")
        if n == 8:
            refused = [c.at for calls, _ in runs for c in calls if not c.granted]
            near = sum(at - math.floor(at / 0.5) * 0.5 < 0.06 for at in refused)
    return f"| {name} | " + " | ".join(cells) + f" | {near / max(1, len(refused)):.0%} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--only", nargs="*", help="variants whose name contains one of these")
    ap.add_argument("--all", action="store_true", help="the whole grid, not the rows shown")
    args = ap.parse_args()
    lines = [f"fleet_sim_variants {datetime.now(UTC):%Y-%m-%dT%H:%MZ}, {args.seeds} seeds"
             " (simulated time: no load figure applies)", "", HEADER]
    print("\n".join(lines), flush=True)
    for name, make in variants().items():
        if name != "AutoRate as on main" and (
                (args.only and not any(o in name for o in args.only))
                or (not args.only and not args.all and name not in SHOWN)):
            continue
        lines.append(row(name, make, args.seeds))
        print(lines[-1], flush=True)
    lines += ["", "Fleets of n on one budget, 10 seeds: throttled, shares apart median (range)",
              "", SIZES_HEADER]
    print("\n".join(lines[-4:]), flush=True)
    every = variants()
    for name in SIZED:
        lines.append(sized_row(name, every[name]))
        print(lines[-1], flush=True)
    stamp = f"{datetime.now(UTC):%Y-%m-%dT%H-%M-%SZ}"
    out = REPO / "bench" / "results" / f"{stamp}-fleet-sim-variants-{args.seeds}-seeds.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
