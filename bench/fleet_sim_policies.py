"""The variants of "auto" that bench/fleet_sim_variants.py simulates: pure policies, each
an `AutoRate` told the time by the simulator, whose clock stands for the wall clock
every process shares. The epochs are multiples of `period` seconds since time 0.
Not part of the product: `AutoRate` (src/pracsuite_ingest/rate_gate.py) is the policy.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from pracsuite_ingest.rate_gate import (  # noqa: E402
    CLIMB_DOUBLING_S,
    DECREASE,
    FIRST_DECREASE,
    HOLD_S,
    OVERSHOT,
    START_GROWTH_PER_S,
    START_RPS,
    AutoRate,
)

EPS = 1e-9


def epoch_of(t: float, period: float) -> int:
    return math.floor(t / period + EPS)


def at_boundary(t: float, period: float) -> bool:
    return abs(t - round(t / period) * period) < EPS


def snapped(nxt: float, interval: float, period: float) -> float:
    """`nxt`, moved to the epoch boundary nearest it if that is within half a spacing:
    a call at every boundary, and as many calls as the rate allows on average (the
    spacing stretched or shrunk once an epoch, as the phase falls)."""
    boundary = round(nxt / period) * period
    return boundary if abs(nxt - boundary) < interval / 2 else nxt


def halve_without_pause(policy: AutoRate, now: float) -> float:
    """The first 429 after the start's overshoot, taken as a step back to half the rate
    of the moment with no pause (the `no_first_pause` variants); the wait before the
    next call."""
    policy.throttled += 1
    policy._last_change = now
    policy.last_429_rate = policy.rate
    policy.rate = max(policy.floor, policy.rate * FIRST_DECREASE)
    policy._probe_s, policy._decreased_at = 0.0, now
    policy.decreases += 1
    return policy.interval_s


@dataclass
class Tuned(AutoRate):
    """A control, not synchronised: AutoRate with another step back (`beta`) and, with
    `no_first_pause`, the start's overshoot halving the rate of the moment, no pause."""

    beta: float = 0.75
    no_first_pause: bool = False

    def throttled_at(self, now: float, sent_at_rate: float | None = None) -> float:
        if self.decreases == 0 and self.no_first_pause and self.rate >= OVERSHOT * START_RPS:
            return halve_without_pause(self, now)
        before = self.decreases
        pause = super().throttled_at(now, sent_at_rate)
        if self.decreases > before > 0:  # an ordinary step back: to beta, not DECREASE
            self.rate = max(self.floor, self.rate / DECREASE * self.beta)
            return self.interval_s
        return pause


@dataclass
class Aligned(AutoRate):
    """AutoRate unchanged but for its sends: the one nearest each epoch boundary goes on
    it, so every process calls at each boundary's instant (no more often on average)."""

    period: float = 0.5

    def next_send_at(self, sent_at: float) -> float:
        return snapped(sent_at + self.interval_s, self.interval_s, self.period)


@dataclass
class AlignedTuned(Tuned):
    """The control (`Tuned`) with `Aligned`'s sends."""

    period: float = 0.5

    def next_send_at(self, sent_at: float) -> float:
        return snapped(sent_at + self.interval_s, self.interval_s, self.period)


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
        return snapped(nxt, self.interval_s, self.period)


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
    no_first_pause: bool = False
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
            if self.no_first_pause and self.rate >= OVERSHOT * START_RPS:
                return self._first_halving(now)
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

    def _first_halving(self, now: float) -> float:
        """The start's overshoot: halve the rate of now (in lockstep, every process's),
        no pause, so the processes still sending are refused too and halve as well."""
        self.throttled += 1
        self.last_429_rate = self.rate
        self.rate = max(self.floor, self.rate * FIRST_DECREASE)
        self._decreased_at = now
        self.decreases += 1
        return self.interval_s

    def next_send_at(self, sent_at: float) -> float:
        if self.decreases == 0 and not self.lockstep_start:
            return sent_at + self.interval_s
        return snapped(sent_at + self.interval_s, self.interval_s, self.period)


@dataclass
class SyncAimd(EpochClimb):
    """AutoRate's climbs (the start's, the slow band, the convex probe), applied in steps
    at epoch boundaries, and a call at every boundary (the probe). A 429 answered within
    `probe_window` of a boundary steps back to `beta` of the rate it was sent at; one
    elsewhere pauses one spacing and steps back only as the `tolerate`-th in its epoch.
    With `no_first_pause` the start's overshoot halves the rate of the moment and does
    not pause (the processes still sending are refused in the same second and halve
    too, instead of one escaping at the top rate while the others pause)."""

    probe: int = 1
    beta: float = DECREASE
    tolerate: int = 3
    probe_window: float = 0.15
    no_first_pause: bool = False
    lockstep_start: bool = False
    _stray_epoch: int = -1
    _stray: int = 0
    _start_epoch: int | None = None

    def succeeded(self, now: float, *, busy: bool = True) -> None:
        if not (self.lockstep_start and self.last_429_rate is None):
            super().succeeded(now, busy=busy)
            return
        # the start's climb, x(1 + START_GROWTH) a second, at each boundary crossed
        epoch = epoch_of(now, self.period)
        if self._start_epoch is None:
            self._start_epoch = epoch
            return
        steps, self._start_epoch = epoch - self._start_epoch, epoch
        self._last_change = now
        if busy and steps > 0:
            growth = (1 + START_GROWTH_PER_S) ** (self.period * steps)
            self.rate = min(self.ceiling, self.rate * growth)

    def throttled_at(self, now: float, sent_at_rate: float | None = None) -> float:
        self._pending = 0.0
        if self.decreases == 0:
            if self.no_first_pause and self.rate >= OVERSHOT * START_RPS:
                return halve_without_pause(self, now)
            return super().throttled_at(now, sent_at_rate)
        epoch = epoch_of(now, self.period)
        if epoch != self._stray_epoch:
            self._stray_epoch, self._stray = epoch, 0
        probe = now - epoch * self.period < self.probe_window
        over = sent_at_rate if sent_at_rate is not None else self.rate
        held = over > self.rate or (self._decreased_at is not None
                                    and now - self._decreased_at < HOLD_S)
        if not probe:
            self._stray += 1
        if held or (not probe and self._stray < self.tolerate):
            self.throttled += 1
            self._last_change = now
            return self.interval_s
        self.throttled += 1
        self._last_change = now
        self.last_429_rate = over
        self.rate = max(self.floor, over * self.beta)
        self._probe_s, self._decreased_at = 0.0, now
        self.decreases += 1
        return self.interval_s


@dataclass
class EpochDecide(AutoRate):
    """Decisions at the epochs only: after the start's overshoot the rate holds still for
    a whole epoch; a 429 in it pauses one spacing but leaves the rate (so the overflow
    keeps landing, on every process in turn); at each boundary a process refused in
    the epoch before steps back to `beta` of the highest rate refused, one that was not
    (and was busy) climbs `step` x P. The start is AutoRate's; its overshoot halves the
    rate of the moment without a pause (`no_first_pause`); a first 429 below OVERSHOT x
    the start rate steps back to 0.75 and the start's climb goes on (a joiner). With
    `convex`, the climb doubles every CLIMB_DOUBLING_S of epochs without a 429 (as
    AutoRate's probe), so a share a leaver gave up is taken in seconds."""

    period: float = 1.0
    beta: float = 0.75
    step: float = 0.2
    convex: bool = False
    _epoch: int | None = None
    _refused_over: float = 0.0
    _busy: bool = False
    _quiet: int = 0

    def _settle(self, now: float) -> None:
        epoch = epoch_of(now, self.period)
        if self._epoch is None:
            self._epoch = epoch
        if epoch == self._epoch:
            return
        if self._refused_over > 0:
            self.last_429_rate = self._refused_over
            self.rate = max(self.floor, self._refused_over * self.beta)
            self.decreases += 1
            self._quiet = 0
        elif self._busy:
            growth = 2 ** (self._quiet * self.period / CLIMB_DOUBLING_S) if self.convex else 1
            self.rate = min(self.ceiling, self.rate + self.step * self.period * growth)
            self._quiet += 1
        self._epoch, self._refused_over, self._busy = epoch, 0.0, False

    def succeeded(self, now: float, *, busy: bool = True) -> None:
        if self.last_429_rate is None:
            super().succeeded(now, busy=busy)
            return
        self._settle(now)
        self._busy = self._busy or busy

    def throttled_at(self, now: float, sent_at_rate: float | None = None) -> float:
        over = sent_at_rate if sent_at_rate is not None else self.rate
        if self.last_429_rate is None:
            if self.rate < OVERSHOT * START_RPS:
                return super().throttled_at(now, sent_at_rate)
            self.throttled += 1
            self.last_429_rate = self.rate
            self.rate = max(self.floor, self.rate * FIRST_DECREASE)
            self.decreases += 1
            self._epoch = epoch_of(now, self.period)
            return self.interval_s
        self._settle(now)
        self.throttled += 1
        if over <= self.rate + EPS:  # not a call in flight from before a step back
            self._refused_over = max(self._refused_over, over)
        return self.interval_s
