"""The adaptive rate gate: find PracSuite's unpublished rate limit while running.

`api.requests_per_second = "auto"` (docs/contract.md) starts at `START_RPS`, raises the rate
while PracSuite answers without throttling (additive increase) and lowers it on a 429
(multiplicative decrease), never above `api.max_requests_per_second`. `AutoRate` is
that policy, pure: it is told what happened and when, and says the rate. The I/O side
(`RateGate`, below) paces calls at that rate; with a fixed rate it is aiolimiter's
leaky bucket, slowed for a while by each 429.

Why this shape (additive increase, multiplicative decrease, as TCP does): a token
bucket that refuses above N requests/s is found from below in a few seconds (until the
first 429 the rate grows by half each second, as TCP's slow start doubles), and one
429 is enough to step back under it. PracSuite's keys are API Gateway keys, throttled
per key: every practice on a vendor key shares one budget, and each process finds its
share alone. So the climb after a 429 is the same requests/s for every process (not a
share of its own rate), and the step back a share of its own rate: that is what makes
senders that never talk converge to equal shares (Chiu and Jain, 1989). The climb is
slow (0.1 requests/s a second) between 0.75 and 1x the rate last refused, where the
next 429 is expected, so a fleet meets few of them; below that and past the refused
rate it is a probe whose speed doubles the longer no 429 comes (TCP CUBIC's convex
probe), so a budget others left is found in seconds. The first 429 halves the rate and
pauses a second (the start ran past the limit on the budget's burst, every process of a
fleet at once), unless it came before the start's climb got anywhere (a process joining
a fleet that already fills the budget: an ordinary step back, and the start's climb goes
on until the next 429, so the joiner reaches its share in seconds); a burst of 429s (calls
already in flight when the rate was lowered) counts as one decrease; no slot is handed
out ahead (callers take their turn one at a time, and the one whose turn it is waits one
spacing at the rate in force when it wakes: a climb shows at once, a 429 holds it); and
the rate climbs only while callers wait for the gate.
How evenly processes that never talk end up sharing is bounded by what each learns:
only its own few 429s, so shares even out over minutes (docs/scale-out.md).
`api.shared_limit` (shared_limit.py) replaces all this guessing with one budget
in Redis for the whole fleet.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiolimiter import AsyncLimiter

from pracsuite_ingest.plural import counted

if TYPE_CHECKING:
    from pracsuite_ingest.shared_limit import SharedLimit

START_RPS = 3.0  # where "auto" starts: what PracSuite's peers allow one user (docs/contract.md)
DEFAULT_MAX_RPS = 20.0  # api.max_requests_per_second's default (README: why)
MIN_RPS = 0.2
START_GROWTH_PER_S = 0.5  # before the first 429: +50% a second (3 -> 20 in about 5 s)
# After a 429: an additive climb, the same requests/s for every process (not a share of
# its own rate: that is what evens out the shares of processes that never talk).
# Between DECREASE and 1 x the rate last refused, where the next 429 is expected, a slow
# CLIMB_RPS_PER_S; elsewhere (below it, after the first and deeper step back; past it,
# where nobody refused us since) a convex probe from that speed, doubling every
# CLIMB_DOUBLING_S, so a budget others left, or a larger one, is found in seconds
CLIMB_RPS_PER_S = 0.1
CLIMB_DOUBLING_S = 6.0
DECREASE = 0.75  # the rate after a 429, as a share of the rate it was sent at
FIRST_DECREASE = 0.5  # the first 429 ends the climb from 3/s, which the budget's burst
#                       let run past the limit (every process of a fleet at once): halve
OVERSHOT = 1.5  # ... if that climb got past OVERSHOT x START_RPS. A first 429 below it
#                 is a process joining a fleet that fills the budget already: an ordinary
#                 step back, no pause, and its start's climb goes on until the next 429
#                 (halved, then climbing 0.1/s, a joiner sat near 1.5/s for most of a
#                 test-length run: shares up to 9.3x apart, simulated; now up to 2.9x)
HOLD_S = 0.5  # 429s this soon after a decrease were in flight before it: no second one
FIRST_PAUSE_S = 1.0  # the first 429 (the budget's burst spent, by every process of a
#                      fleet at once): no call for a second, while the budget refills
BUSY_WITHIN_S = 1.0  # the gate counts as busy this long after a caller waited for it


@dataclass
class AutoRate:
    """The rate "auto" allows now (`rate`), moved by successes and 429s. Pure.

    Each method takes `now` (seconds, monotonic); nothing here reads a clock.

    Many processes may share one limit (every practice on a vendor key: API Gateway
    throttles per key) and none knows the others. Additive increase, multiplicative
    decrease (as TCP) is what makes such senders converge to equal shares: a 429 cuts
    each by the same share of its rate, so the larger loses more, while all climb by
    the same requests/s. A token bucket refuses calls, not senders, so the larger
    sender also meets more of the 429s. Outside the band where the next 429 is
    expected the climb's speed doubles the longer no 429 comes (TCP CUBIC's convex
    probe), so a process left alone, or one whose neighbours left, is not held below
    the budget for long.
    """

    ceiling: float = DEFAULT_MAX_RPS
    rate: float = START_RPS
    floor: float = MIN_RPS
    last_429_rate: float | None = None  # the rate the last counted 429 was sent at
    throttled: int = 0  # 429s seen
    decreases: int = 0  # times the rate was lowered (a burst of 429s is one)
    _last_change: float | None = field(default=None, repr=False)
    _probe_s: float = field(default=0.0, repr=False)  # busy time probing since a decrease
    _decreased_at: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.rate = min(max(self.rate, self.floor), self.ceiling)

    @property
    def interval_s(self) -> float:
        return 1.0 / self.rate

    def next_send_at(self, sent_at: float) -> float:
        """When the call after one sent at `sent_at` may go: one spacing at today's rate."""
        return sent_at + self.interval_s

    def succeeded(self, now: float, *, busy: bool = True) -> None:
        """An answer that was not a 429: climb for the time since the last change.

        Only while `busy` (callers have been waiting for their turn, so the rate is what
        holds the run back): a rate that was never used proves nothing, and climbing
        on it would let a later burst of calls go out far above PracSuite's limit
        (TCP's congestion window validation, RFC 7661, for the same reason).
        """
        if self._last_change is None:
            self._last_change = now
            return
        elapsed = max(0.0, now - self._last_change)
        self._last_change = now
        if not busy:
            return
        refused = self.last_429_rate
        if refused is None:  # nothing known yet: find the limit quickly
            self.rate += START_GROWTH_PER_S * self.rate * elapsed
        elif DECREASE * refused <= self.rate < refused:  # where the next 429 is expected
            self.rate += CLIMB_RPS_PER_S * elapsed
        else:  # below it (after the first step back) or past it: probe, faster and faster
            self.rate += climb(self._probe_s, elapsed)
            self._probe_s += elapsed
        self.rate = min(self.ceiling, self.rate)

    def throttled_at(self, now: float, sent_at_rate: float | None = None) -> float:
        """A 429 for a call sent when the rate was `sent_at_rate` (default: now's).

        A call sent at a rate above today's, or answered within `HOLD_S` of the last
        decrease, was in flight when the rate was lowered for an earlier 429: the same
        event, no second decrease. Otherwise step back to `DECREASE` of the refused rate
        (`FIRST_DECREASE` for the first 429 after the start's climb ran past `OVERSHOT`
        x `START_RPS`; a first 429 below that leaves the start's climb on). Returns how
        long to send nothing when the server did not say: one spacing at the rate now,
        or `FIRST_PAUSE_S` after that first halving.
        """
        self.throttled += 1
        self._last_change = now  # no climbing credit for a time that was refused
        over = sent_at_rate if sent_at_rate is not None else self.rate
        if over > self.rate or (self._decreased_at is not None
                                and now - self._decreased_at < HOLD_S):
            return self.interval_s
        first = self.decreases == 0
        overshot = first and over >= OVERSHOT * START_RPS
        if overshot or not first:  # a joiner's first 429 leaves its start's climb on
            self.last_429_rate = over
        self.rate = max(self.floor, over * (FIRST_DECREASE if overshot else DECREASE))
        self._probe_s = 0.0
        self._decreased_at = now
        self.decreases += 1
        return FIRST_PAUSE_S if overshot else self.interval_s


def climb(climbing_s: float, elapsed: float) -> float:
    """Requests/s gained in `elapsed` more seconds of a climb `climbing_s` seconds old:
    the integral of CLIMB_RPS_PER_S * 2 ** (s / CLIMB_DOUBLING_S) over that time."""
    k = math.log(2) / CLIMB_DOUBLING_S
    return CLIMB_RPS_PER_S * (math.exp(k * (climbing_s + elapsed)) - math.exp(k * climbing_s)) / k


@dataclass(frozen=True)
class Pace:
    """How one process used PracSuite's API: for the logs, the summary and the metrics."""

    mode: str  # "auto" or "fixed"
    requests_per_second: float  # what the gate allows now: where "auto" settled
    calls: int
    throttled: int  # calls answered 429

    def as_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "requests_per_second": round(self.requests_per_second, 2),
                "calls": self.calls, "throttled": self.throttled}

    def text(self) -> str:
        share = f" ({self.throttled / self.calls:.1%})" if self.calls else ""
        where = "settled at" if self.mode == "auto" else "limited to"
        return (f"PracSuite API: {counted(self.calls, 'call')}, {self.throttled:,} throttled"
                f"{share}; "
                f"{self.mode} rate {where} {self.requests_per_second:.2f} requests/s")


def slowed_interval(current: float, base: float) -> float:
    """After a 429: half as fast again (at least twice the configured spacing), at most 5 s.

    With `recovered_interval` this settles near the configured rate when 429s are rare
    and backs off steeply when they persist (x1.5 per 429 against x0.8 per success:
    the spacing grows only while more than ~1 in 3 answers is a 429).
    """
    return min(5.0, max(current * 1.5, base * 2, 0.02))


def recovered_interval(current: float, base: float) -> float:
    """After a success: a fifth closer to the configured spacing."""
    return max(base, current * 0.8)


class RateGate:
    """A process-wide limit on PracSuite calls that a 429 slows for everybody.

    Fixed (`requests_per_second` a number): that rate is the ceiling (aiolimiter's
    leaky bucket); a 429 widens the spacing between calls (`slowed_interval`) and
    successes narrow it back (`recovered_interval`). Auto (`auto` given): calls are
    spaced at the rate `AutoRate` allows, which it moves as answers come. In both, a
    429 pauses every caller for what the server asked (`Retry-After`, already capped
    by `retry.py`). Entering the gate gives the rate the call is sent at, which the
    429 of that call hands back (`throttle`).
    """

    def __init__(self, requests_per_second: float, *, auto: AutoRate | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 shared: SharedLimit | None = None) -> None:
        burst = max(1.0, requests_per_second)
        self._limiter = AsyncLimiter(burst, burst / requests_per_second)
        self._base = 1.0 / requests_per_second
        self._interval = self._base
        self._auto = auto
        self._clock = clock
        self._next_at = 0.0  # fixed: no call before it (a 429's widened spacing)
        self._sent_at = -math.inf  # "auto": when the last call was let go
        self._turn = asyncio.Lock()  # "auto" and shared: callers go one at a time, in order
        self._paused_until = 0.0
        self.throttled = 0
        self.calls = 0
        self._waited_at = -BUSY_WITHIN_S  # when a caller last had to wait for its turn
        # api.shared_limit: slots come from Redis; `auto` paces alone while it is down
        self._shared = shared
        self._via_shared = False  # the last slot came from the shared budget

    @classmethod
    def for_setting(cls, requests_per_second: float | str, max_requests_per_second: float,
                    shared: SharedLimit | None = None) -> RateGate:
        """The gate `api.requests_per_second` asks for: a number, or "auto"; with
        `shared` (api.shared_limit) that rate is the whole fleet's, and a process Redis
        fails paces itself with "auto" from 3/s (never above the number, if one)."""
        if isinstance(requests_per_second, str) or shared is not None:
            ceiling = (max_requests_per_second if isinstance(requests_per_second, str)
                       else requests_per_second)
            auto = AutoRate(ceiling=ceiling, rate=min(START_RPS, ceiling))
            return cls(ceiling, auto=auto, shared=shared)
        return cls(requests_per_second)

    @property
    def shared(self) -> SharedLimit | None:
        return self._shared

    async def aclose(self) -> None:
        """Close the shared limit's connection, if any."""
        if self._shared is not None:
            await self._shared.aclose()

    @property
    def auto(self) -> AutoRate | None:
        return self._auto

    @property
    def interval_s(self) -> float:
        return self._auto.interval_s if self._auto is not None else self._interval

    @property
    def rate(self) -> float:
        """Requests per second the gate allows now (with a shared limit: the fleet's)."""
        if self._shared is not None and self._via_shared:
            return self._shared.rate
        return 1.0 / self.interval_s

    def pace(self) -> Pace:
        return Pace("auto" if self._auto is not None else "fixed", self.rate, self.calls,
                    self.throttled)

    def throttle(self, retry_after_s: float | None, sent_at_rate: float | None = None) -> None:
        self.throttled += 1
        now = self._clock()
        advised = None
        if self._shared is not None and self._via_shared:
            self._shared.throttled(sent_at_rate if sent_at_rate is not None else self.rate)
        elif self._auto is not None:
            advised = self._auto.throttled_at(now, sent_at_rate)
        else:
            self._interval = slowed_interval(self._interval, self._base)
        pause = retry_after_s if retry_after_s is not None else advised or self.interval_s
        if not math.isfinite(pause) or pause < 0:  # callers cap it; never pause forever
            pause = self.interval_s
        self._paused_until = max(self._paused_until, now + pause)

    def succeeded(self) -> None:
        if self._shared is not None and self._via_shared:
            return  # the shared rate climbs in Redis
        if self._auto is not None:
            now = self._clock()
            self._auto.succeeded(now, busy=now - self._waited_at < BUSY_WITHIN_S)
        else:
            self._interval = recovered_interval(self._interval, self._base)

    async def __aenter__(self) -> float:
        if self._auto is None and self._shared is None:
            await self._after_pause()
            self.calls += 1
            if self._interval > self._base:
                self._next_at = self._clock() + self._interval
            await self._limiter.acquire()
            return self.rate
        # Callers take their turn one at a time, in order of arrival (asyncio.Lock is
        # FIFO), and the one whose turn it is waits for its slot at the rate in force when
        # it wakes. No slot is handed out ahead: slots booked at the rate of the moment
        # each caller arrived (eight callers at 3/s: 2.7 s of them) hid every climb until
        # they were spent, so a run sat at 3/s for its first seconds and then jumped to
        # the rate the gate had reached meanwhile.
        async with self._turn:
            return await self._take_turn()

    async def _take_turn(self) -> float:
        """The slot of the caller whose turn it is: from the shared budget (api.shared_limit)
        while Redis answers, else one spacing of "auto"'s rate after the last call sent."""
        while True:
            now = await self._after_pause()
            if self._shared is not None:
                given = await self._shared.acquire(now)
                self._via_shared = given is not None
                if given is not None:
                    wait, rate = given
                    if wait > 0:
                        self._waited_at = now
                        await asyncio.sleep(wait)
                    self.calls += 1
                    return rate
            assert self._auto is not None  # a shared limit always has "auto" to fall back on
            rate = self._auto.rate
            slot = self._auto.next_send_at(self._sent_at)
            if slot <= now:
                self._sent_at = now
                self.calls += 1
                return rate
            self._waited_at = now
            await asyncio.sleep(slot - now)  # then again: a 429 or a climb meanwhile moved it

    async def _after_pause(self) -> float:
        """Wait out a 429's pause (and, fixed, the widened spacing); the time after it.
        A later 429 may extend the pause while we sleep: check again after each wait."""
        while True:
            now = self._clock()
            wait = self._paused_until - now if self._auto is not None else max(
                self._paused_until, self._next_at) - now
            if wait <= 0:
                return now
            await asyncio.sleep(wait)

    async def __aexit__(self, *exc: object) -> None:
        return None
