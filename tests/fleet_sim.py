"""Processes pacing themselves with "auto" against one budget, in simulated time (pure).

The budget is the sandbox's own (`sandbox.faults.Faults` with `rate_budget`: a token
bucket holding one second's worth, a refused call taking no token), so the simulation
and the fleet tests on real processes meet the same limit. Each process sends at the
spacing its `AutoRate` allows; every call reaches the budget after a random latency and
its answer comes back after another (each way half a draw from `latency`), so answers
arrive out of step with the sends as on a real network, and the budget decides in the
order the calls reach it (it used to decide in the order they were sent: of calls sent
at one instant, the first sender's always had the token); a 429 pauses the process for
what `AutoRate.throttled_at` advises, and its next call waits for the pause (as
`RateGate` does). Each call goes at the rate the policy has reached, as the gate sends
since it stopped handing out slots ahead (before, real processes sat at 3/s for their
first seconds, which this never modelled). Processes may start late and stop early.
Figures are exact and repeatable for a seed: this is the policy's behaviour, not this
machine's timing.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pracsuite_ingest.rate_gate import AutoRate
from pracsuite_ingest.sandbox.faults import FaultPlan, Faults


class Policy(Protocol):
    """What the simulation drives: `AutoRate` or a variant (bench/fleet_sim_variants.py).
    Times are the simulation's clock, which every process shares (as the wall clock)."""

    @property
    def rate(self) -> float: ...

    def succeeded(self, now: float, *, busy: bool = True) -> None: ...

    def throttled_at(self, now: float, sent_at_rate: float | None = None) -> float: ...

    def next_send_at(self, sent_at: float) -> float: ...


SEND, ARRIVE, GRANTED, REFUSED = range(4)  # the simulation's events


@dataclass(frozen=True)
class Call:
    at: float  # when the budget decided it
    process: int
    granted: bool


@dataclass(frozen=True)
class Shares:
    used: float  # granted calls over what the budget allows in the window
    throttled: float  # share of the calls answered 429
    granted: list[int]  # per process looked at

    @property
    def spread(self) -> float:
        return max(self.granted) / max(1, min(self.granted))


def simulate(budget: float, spans: list[tuple[float, float]], *, seed: int,
             latency: tuple[float, float] = (0.01, 0.1), ceiling: float = 20.0,
             policy: Callable[[float], Policy] = lambda ceiling: AutoRate(ceiling=ceiling),
             ) -> list[Call]:
    """Every call of processes running over `spans` ((start, stop) seconds each), each
    paced by `policy(ceiling)` (default: `AutoRate`)."""
    rng = random.Random(seed)
    bucket = Faults(FaultPlan(rate_budget=budget))
    gates = [policy(ceiling) for _ in spans]
    next_at = [start for start, _ in spans]
    # (time, order, kind, process, rate sent at)
    events = [(start, k, SEND, k, 0.0) for k, (start, _) in enumerate(spans)]
    heapq.heapify(events)
    calls: list[Call] = []
    order = len(events)

    def push(at: float, kind: int, k: int, rate: float) -> None:
        nonlocal order
        heapq.heappush(events, (at, order, kind, k, rate))
        order += 1

    while events:
        t, _, kind, k, sent_at = heapq.heappop(events)
        if kind == SEND:
            if t >= spans[k][1]:
                continue
            if t < next_at[k]:  # a 429 moved this process's next slot meanwhile
                push(next_at[k], SEND, k, 0.0)
                continue
            push(t + rng.uniform(*latency) / 2, ARRIVE, k, gates[k].rate)
            next_at[k] = gates[k].next_send_at(t)
            push(next_at[k], SEND, k, 0.0)
        elif kind == ARRIVE:  # the budget decides in the order calls arrive
            granted = bucket.api_fault(t) is None
            calls.append(Call(t, k, granted))
            push(t + rng.uniform(*latency) / 2, GRANTED if granted else REFUSED, k, sent_at)
        elif kind == GRANTED:
            gates[k].succeeded(t)
        else:
            next_at[k] = max(next_at[k], t + gates[k].throttled_at(t, sent_at))
    return calls


def shares(calls: list[Call], budget: float, which: list[int], start: float,
           end: float) -> Shares:
    """What the budget did for processes `which` between `start` and `end`."""
    granted = dict.fromkeys(which, 0)
    refused = 0
    for c in calls:
        if start <= c.at < end and c.process in granted:
            if c.granted:
                granted[c.process] += 1
            else:
                refused += 1
    total = sum(granted.values())
    return Shares(total / (budget * (end - start)), refused / max(1, total + refused),
                  list(granted.values()))
