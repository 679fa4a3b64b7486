"""Injected faults: which request fails and how, decided by one seeded RNG.

`FaultPlan` holds the knobs (mutable, so a test or `/_sandbox/reset-faults` can
change them while the servers run); `Faults` draws the decisions. The draws are
reproducible for a given seed and request order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from email.utils import format_datetime
from enum import StrEnum


class ThrottleStyle(StrEnum):
    """How a 429 tells the client when to come back."""

    RETRY_AFTER_SECONDS = "retry_after_seconds"  # Retry-After: 2
    RETRY_AFTER_DATE = "retry_after_date"  # Retry-After: <HTTP date>
    RATELIMIT_RESET = "ratelimit_reset"  # X-RateLimit-Reset: <epoch seconds>
    GATEWAY = "gateway"  # API Gateway: {"message": "Too Many Requests"}, no hint


class ApiFault(StrEnum):
    THROTTLED = "api_429"
    SERVER_ERROR = "api_500"


class S3Fault(StrEnum):
    SLOWDOWN = "s3_slowdown"  # 503 SlowDown, nothing stored
    DROP_BEFORE = "s3_drop_before"  # connection closed, nothing stored
    DROP_AFTER = "s3_drop_after"  # stored, then connection closed unanswered


@dataclass
class FaultKnobs:
    """The fault knobs, declared once: `FaultPlan` checks them, `SandboxOptions`
    (options.py) carries them to the servers. Every rate is a probability per request
    in [0, 1]."""

    fail_rate_429: float = 0.0
    throttle_style: ThrottleStyle = ThrottleStyle.RETRY_AFTER_SECONDS
    retry_after_s: int = 1
    throttle_value: str | None = None  # sent verbatim as the wait header (any text)
    fail_rate_500: float = 0.0
    s3_slowdown_rate: float = 0.0
    s3_drop_before_rate: float = 0.0
    s3_drop_after_rate: float = 0.0
    latency_ms: tuple[int, int] | None = None
    # PracSuite's unpublished rate limit, played: requests/s accepted (a token bucket
    # holding one second's worth), 429 above it in `throttle_style`; 0 = no limit.
    # Per vendor key, as API Gateway's usage plans: every practice key shares it
    rate_budget: float = 0.0
    # A usage-plan quota, played (its size is PracSuite's vendor's; unknown): after this
    # many authenticated API calls, every call is answered 429 `{"message":
    # quota_message}` as API Gateway answers a spent quota, with no Retry-After unless
    # `quota_retry_after` gives one (sent verbatim, e.g. 1000000000); None = no quota
    quota_after: int | None = None
    quota_message: str = "Limit Exceeded"
    quota_retry_after: str | None = None


@dataclass
class FaultPlan(FaultKnobs):
    """The fault knobs the servers play, validated (ValueError when out of range)."""

    @classmethod
    def of(cls, knobs: FaultKnobs) -> FaultPlan:
        """The plan holding `knobs`' values (e.g. a `SandboxOptions`'), validated."""
        return cls(**{f.name: getattr(knobs, f.name) for f in fields(FaultKnobs)})

    def __post_init__(self) -> None:
        if self.rate_budget < 0:
            raise ValueError("rate_budget must not be negative")
        for name in (
            "fail_rate_429",
            "fail_rate_500",
            "s3_slowdown_rate",
            "s3_drop_before_rate",
            "s3_drop_after_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.latency_ms is not None and not 0 <= self.latency_ms[0] <= self.latency_ms[1]:
            raise ValueError("latency_ms must be (min, max) with 0 <= min <= max")
        if self.retry_after_s < 0:
            raise ValueError("retry_after_s must not be negative")
        if self.quota_after is not None and self.quota_after < 0:
            raise ValueError("quota_after must not be negative")


@dataclass
class Faults:
    """Draws fault decisions from `plan`, from three RNG streams seeded once: API faults,
    S3 faults and latency. Each stream's draws follow only its own requests, so with one
    upload at a time the S3 faults come in the same order however the worker
    interleaves its API calls (reconcile runs alongside the uploads)."""

    plan: FaultPlan
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)
    _s3_rng: random.Random = field(init=False, repr=False)
    _latency_rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        seeded = self.seed is not None
        self._s3_rng = random.Random(f"{self.seed}/s3" if seeded else None)
        self._latency_rng = random.Random(f"{self.seed}/latency" if seeded else None)
        self._tokens = 0.0
        self._filled_at: float | None = None
        self._api_calls = 0  # authenticated API calls, for `quota_after`

    def reset(self) -> None:
        """No faults, no latency and no quota from now on (the quota period reset)."""
        self._api_calls = 0
        self.plan = FaultPlan(throttle_style=self.plan.throttle_style,
                              throttle_value=self.plan.throttle_value)

    def latency_s(self) -> float:
        """Seconds to hold this request before answering it."""
        if self.plan.latency_ms is None:
            return 0.0
        low, high = self.plan.latency_ms
        return self._latency_rng.uniform(low, high) / 1000.0

    def api_fault(self, now: float = 0.0) -> ApiFault | None:
        """The fault for one authenticated API request, if any (429 is drawn first).

        `now` (monotonic seconds) is when it arrived, for `rate_budget`.
        """
        if self._over_budget(now) or self._hit(self.plan.fail_rate_429):
            return ApiFault.THROTTLED
        if self._hit(self.plan.fail_rate_500):
            return ApiFault.SERVER_ERROR
        return None

    def quota_spent(self) -> bool:
        """Count one authenticated API call; True once `quota_after` calls were taken."""
        self._api_calls += 1
        limit = self.plan.quota_after
        return limit is not None and self._api_calls > limit

    def s3_fault(self) -> S3Fault | None:
        """The fault for one S3 POST, if any."""
        if self._hit(self.plan.s3_slowdown_rate, self._s3_rng):
            return S3Fault.SLOWDOWN
        if self._hit(self.plan.s3_drop_before_rate, self._s3_rng):
            return S3Fault.DROP_BEFORE
        if self._hit(self.plan.s3_drop_after_rate, self._s3_rng):
            return S3Fault.DROP_AFTER
        return None

    def _over_budget(self, now: float) -> bool:
        """True when this request exceeds `rate_budget` (a refused one takes no token)."""
        budget = self.plan.rate_budget
        if budget <= 0:
            return False
        capacity = max(1.0, budget)
        if self._filled_at is None:
            self._tokens = capacity
        else:
            self._tokens = min(capacity, self._tokens + (now - self._filled_at) * budget)
        self._filled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return False
        return True

    def _hit(self, rate: float, rng: random.Random | None = None) -> bool:
        # No draw at rate 0, so a knob left off does not shift the other knobs' draws.
        return rate > 0.0 and (rng or self._rng).random() < rate


def throttle_headers(style: ThrottleStyle, retry_after_s: int, now: datetime,
                     value: str | None = None) -> dict[str, str]:
    """The headers of a 429 in `style`; `now` is timezone-aware.

    `value`, when given, is sent verbatim as the style's wait header (`Retry-After`, or
    `X-RateLimit-Reset`), whatever it holds: a misconfigured gateway's `1000000000`,
    `nan`, `inf`, `-5` or `²`.
    """
    if value is not None and style is not ThrottleStyle.GATEWAY:
        name = "X-RateLimit-Reset" if style is ThrottleStyle.RATELIMIT_RESET else "Retry-After"
        return {name: value}
    if style is ThrottleStyle.RETRY_AFTER_SECONDS:
        return {"Retry-After": str(retry_after_s)}
    if style is ThrottleStyle.RETRY_AFTER_DATE:
        # An HTTP date has whole seconds: round up so the client never comes back early.
        at = (now + timedelta(seconds=retry_after_s + 1)).replace(microsecond=0)
        return {"Retry-After": format_datetime(at, usegmt=True)}
    if style is ThrottleStyle.RATELIMIT_RESET:
        reset = int(now.timestamp()) + retry_after_s + 1
        return {
            "X-RateLimit-Limit": "200",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
        }
    return {}
