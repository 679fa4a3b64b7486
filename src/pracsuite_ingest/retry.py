"""The one retry policy: what to retry and how long to wait, decided in pure code.

`decide` is pure; `retrying` is the thin loop that applies it and is the only place
that sleeps between attempts of one request.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pracsuite_ingest.errors import OutcomeUnknown, PolicyExpired, Retryable

T = TypeVar("T")

BASE_DELAY_S = 0.5
MAX_DELAY_S = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    retry: bool
    delay_s: float = 0.0


def backoff_s(attempt: int, rng: random.Random, base: float = BASE_DELAY_S,
              cap: float = MAX_DELAY_S) -> float:
    """Exponential backoff with full jitter for the `attempt`-th failure (1-based)."""
    return rng.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def decide(error: BaseException, attempt: int, max_attempts: int, rng: random.Random) -> Decision:
    """Whether to try again after `attempt` failed with `error`, and after how long.

    An `OutcomeUnknown` upload is never retried here: it may already have been stored,
    so it goes to reconciliation instead (SPEC.md guarantees). A `PolicyExpired`
    is not retried here either: the caller presigns again.
    """
    if isinstance(error, OutcomeUnknown | PolicyExpired) or not isinstance(error, Retryable):
        return Decision(retry=False)
    if attempt >= max_attempts:
        return Decision(retry=False)
    if error.retry_after is not None:
        return Decision(retry=True, delay_s=min(max(error.retry_after, 0.0), MAX_DELAY_S))
    return Decision(retry=True, delay_s=backoff_s(attempt, rng))


def retry_after_s(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date), else `X-RateLimit-Reset`."""
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - now)
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            epoch = float(reset.strip())
        except ValueError:
            return None
        # Some peers send seconds-until-reset instead of an epoch: small numbers are that.
        return max(0.0, epoch - now) if epoch > 1e9 else epoch
    return None


class PolicyRetrier:
    """`retrying` with the run's settings, as one callable a stage can be handed."""

    def __init__(self, max_attempts: int, rng: random.Random,
                 on_retry: Callable[[BaseException, int, float], None] | None = None) -> None:
        self.max_attempts = max_attempts
        self.rng = rng
        self.on_retry = on_retry

    async def __call__(self, op: Callable[[], Awaitable[T]]) -> T:
        return await retrying(op, max_attempts=self.max_attempts, rng=self.rng,
                              on_retry=self.on_retry)


async def retrying(
    op: Callable[[], Awaitable[T]],
    *,
    max_attempts: int,
    rng: random.Random,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
) -> T:
    """Run `op` until it succeeds or `decide` says stop; re-raise the last error."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await op()
        except Retryable as exc:
            decision = decide(exc, attempt, max_attempts, rng)
            if not decision.retry:
                raise
            if on_retry is not None:
                on_retry(exc, attempt, decision.delay_s)
            await asyncio.sleep(decision.delay_s)
