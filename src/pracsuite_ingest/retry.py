"""The one retry policy: what to retry and how long to wait, decided in pure code.

`decide_retry` is pure; `retrying` is the thin loop that applies it and is the only
place that sleeps between attempts of one request.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pracsuite_ingest.errors import OutcomeUnknown, PolicyExpired, Retryable

T = TypeVar("T")

BASE_DELAY_S = 0.5
MAX_DELAY_S = 60.0


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay_s: float = 0.0


def backoff_s(attempt: int, rng: random.Random, base: float = BASE_DELAY_S,
              cap: float = MAX_DELAY_S) -> float:
    """Exponential backoff with full jitter for the `attempt`-th failure (1-based)."""
    return rng.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def decide_retry(error: BaseException, attempt: int, max_attempts: int,
                 rng: random.Random) -> RetryDecision:
    """Whether to try again after `attempt` failed with `error`, and after how long.

    An `OutcomeUnknown` upload is never retried here: it may already have been stored,
    so it goes to reconciliation instead (docs/contract.md, "Guarantees"). A `PolicyExpired`
    is not retried here either: the caller presigns again.
    """
    if isinstance(error, OutcomeUnknown | PolicyExpired) or not isinstance(error, Retryable):
        return RetryDecision(retry=False)
    if attempt >= max_attempts:
        return RetryDecision(retry=False)
    wait = error.retry_after
    if wait is not None and math.isfinite(wait) and wait >= 0:
        # Already capped at api.max_wait_s where the answer was read (`server_wait`).
        return RetryDecision(retry=True, delay_s=wait)
    return RetryDecision(retry=True, delay_s=backoff_s(attempt, rng))


MAX_WAIT_S = 120.0  # api.max_wait_s: the longest wait a server's answer may impose
_ASKED_CHARS = 40  # how much of a header value a log line quotes


@dataclass(frozen=True, slots=True)
class ServerWait:
    """What a throttling answer asked for, and what will be waited.

    `asked` quotes the header as sent (shortened, control characters shown as
    escapes), or is empty when the answer named no wait. `seconds` is the wait,
    capped at `max_wait_s`; None when the value is not a usable wait (`nan`, `inf`, a
    negative number, text): then the ordinary backoff applies.
    """

    asked: str = ""
    seconds: float | None = None
    capped: bool = False
    asked_s: float | None = None  # the wait asked, uncapped (None: none, or not a wait)

    def note(self, cap_s: float) -> str:
        """The operator's words for it, for an error message ('' when nothing was asked)."""
        if not self.asked:
            return ""
        if self.seconds is None:
            return f"it asked to wait {self.asked}, which is not a wait: backing off"
        if self.capped:
            return (f"it asked to wait {self.asked}; waiting {cap_s:g} s "
                    "(api.max_wait_s)")
        return ""


def _quoted(name: str, value: str) -> str:
    text = value if len(value) <= _ASKED_CHARS else value[:_ASKED_CHARS] + "..."
    shown = "".join(c if c.isprintable() and c.isascii() else f"\\u{ord(c):04x}"
                    for c in text)
    return f"({name}: {shown})"


def _usable(seconds: float) -> bool:
    return math.isfinite(seconds) and seconds >= 0


def server_wait(headers: Mapping[str, str], now: float,
                max_wait_s: float = MAX_WAIT_S) -> ServerWait:
    """The wait a throttling answer asks for: `Retry-After` (whole seconds or an HTTP
    date), else `X-RateLimit-Reset` (an epoch, or seconds when small); capped at
    `max_wait_s`. Pure; never raises on whatever the headers hold."""
    seconds: float | None = None
    value = headers.get("Retry-After")
    name = "Retry-After"
    if value is not None and value.strip():
        value = value.strip()
        if value.isascii() and value.isdigit():  # "²".isdigit() is True, float("²") fails
            seconds = float(value)
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError, OverflowError):
                when = None
            if when is not None and when.tzinfo is not None:
                seconds = max(0.0, when.timestamp() - now)
    else:
        name = "X-RateLimit-Reset"
        value = headers.get(name)
        if value is None or not value.strip():
            return ServerWait()
        value = value.strip()
        try:
            epoch = float(value) if value.isascii() else math.nan
        except ValueError:
            epoch = math.nan
        if _usable(epoch):
            # Some peers send seconds-until-reset instead of an epoch: small numbers are that.
            seconds = max(0.0, epoch - now) if epoch > 1e9 else epoch
    asked = _quoted(name, value)
    if seconds is None or not _usable(seconds):
        return ServerWait(asked, None)
    if seconds > max_wait_s:
        return ServerWait(asked, max_wait_s, capped=True, asked_s=seconds)
    return ServerWait(asked, seconds, asked_s=seconds)


def retry_after_s(headers: Mapping[str, str], now: float,
                  max_wait_s: float = MAX_WAIT_S) -> float | None:
    """Seconds to wait (capped), or None for the ordinary backoff (`server_wait`)."""
    return server_wait(headers, now, max_wait_s).seconds


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
    """Run `op` until it succeeds or `decide_retry` says stop; re-raise the last error."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await op()
        except Retryable as exc:
            decision = decide_retry(exc, attempt, max_attempts, rng)
            if not decision.retry:
                raise
            if on_retry is not None:
                on_retry(exc, attempt, decision.delay_s)
            await asyncio.sleep(decision.delay_s)
