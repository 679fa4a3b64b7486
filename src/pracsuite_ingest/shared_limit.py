"""One rate budget for every process on a vendor key, held in Redis (`api.shared_limit`).

PracSuite's keys are API Gateway keys, throttled per key: every practice a migration team
runs on one vendor key draws from the same budget. With `api.shared_limit =
"redis://HOST:PORT/DB"` each API call first takes the next slot of that budget from
Redis: a GCRA (the "theoretical arrival time" of the next call, `tat`) in one atomic Lua
script, so processes on any number of machines are spaced as one. With
`requests_per_second = "auto"` the same script also moves the shared rate: whoever meets
a 429 reports the rate it was sent at with its next slot, and the script steps the rate
back (once per burst: to half at the first, which ends a climb the budget's burst let
run past the limit, then to 0.75); while callers queue for slots it climbs (from 3/s,
+50% a second until the first 429; then quickly to 0.9 of the refused rate and slowly
past it, the first refused rate counting as its half: the burst's, not the budget's).

The Redis key is a hash of the vendor key (never the key); the URL's password is never
logged. Redis unreachable, at the start or mid-run: one log line, and this process
paces itself with its own "auto" gate from 3/s (`SharedLimit.acquire` answers None), and
asks Redis again every `RETRY_S`. The migration never stops for Redis.

Cost: one Redis round trip per API call (well under a millisecond on a LAN, against
PracSuite's tens of milliseconds).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pracsuite_ingest.settings import Settings

RETRY_S = 5.0  # how long a process paces itself after Redis failed, before asking again
TIMEOUT_S = 1.0  # one Redis call, connect included
KEY_PREFIX = "pracsuite-ingest:rate:"
KEY_TTL_MS = 24 * 3600 * 1000  # a budget nobody used for a day is forgotten

# ARGV: mode ("auto" | "fixed"), start or fixed rate, ceiling, the rate a 429 reported
# since this process's last slot was sent at (0: none). Returns {wait ms, rate} as text.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local s = redis.call('HMGET', KEYS[1], 'tat', 'rate', 'r429', 'upd', 'dec')
local tat = tonumber(s[1]) or now
local rate = tonumber(s[2]) or tonumber(ARGV[2])
local r429 = tonumber(s[3]) or 0
local upd = tonumber(s[4]) or now
local dec = tonumber(s[5]) or 0
local ceiling = tonumber(ARGV[3])
if ARGV[1] ~= 'auto' then
  rate = tonumber(ARGV[2])
else
  local refused = tonumber(ARGV[4])
  if refused > 0 and refused <= rate * 1.0001 and now - dec >= 500 then
    -- the first 429 ends a climb the budget's burst let run past the limit: halve, and
    -- take the halved rate as the one refused (the budget's, not the burst's)
    local factor = 0.75
    if r429 == 0 then
      refused = refused * 0.5
      factor = 1.0
    end
    r429 = refused
    rate = math.max(0.2, refused * factor)
    dec = now
    upd = now
  end
  local dt = math.max(0, now - upd) / 1000
  if tat > now then
    if r429 == 0 then
      rate = rate + 0.5 * rate * dt
    else
      local near = 0.9 * r429
      if rate < near then
        rate = math.min(near, rate + 0.1 * r429 * dt)
      else
        rate = rate + 0.005 * r429 * dt
      end
    end
  end
  rate = math.min(ceiling, rate)
  upd = now
end
local start = math.max(tat, now)
redis.call('HSET', KEYS[1], 'tat', tostring(start + 1000 / rate), 'rate', tostring(rate),
           'r429', tostring(r429), 'upd', tostring(upd), 'dec', tostring(dec))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {tostring(start - now), tostring(rate)}
"""


def budget_key(vendor_api_key: str) -> str:
    """The Redis key of a vendor key's budget: a hash, so the key itself never leaves."""
    digest = hashlib.sha256(b"pracsuite-ingest/shared-limit/" + vendor_api_key.encode())
    return KEY_PREFIX + digest.hexdigest()[:32]


def where(url: str) -> str:
    """`redis://user:secret@host:6379/0` -> `host:6379/0`: for logs, never the password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    db = parts.path.lstrip("/") or "0"
    return f"{parts.scheme}://{host}{port}/{db}"


def retry_at(now: float) -> float:
    """When to ask Redis again after it failed at `now`."""
    return now + RETRY_S


class SharedLimit:
    """The slots of one vendor key's budget, from Redis; None while Redis is unusable."""

    def __init__(self, url: str, vendor_api_key: str, *, auto: bool, rate: float,
                 ceiling: float, log: Callable[..., None]) -> None:
        self._url = url
        self._where = where(url)
        self._key = budget_key(vendor_api_key)
        self._args = ["auto" if auto else "fixed", rate, ceiling]
        self._log = log  # a structlog-style method: log(event, **fields)
        self._client: Any = None
        self._script: Any = None
        self._retry_at = 0.0
        self._down = False
        self._refused = 0.0  # the rate a 429 was sent at, for the next slot to report
        self.rate = rate

    @property
    def where(self) -> str:
        return self._where

    def throttled(self, sent_at_rate: float) -> None:
        """A call sent at the shared `sent_at_rate` met a 429: told with the next slot."""
        self._refused = max(self._refused, sent_at_rate)

    async def acquire(self, now: float) -> tuple[float, float] | None:
        """(seconds to wait for this call's slot, the shared rate), or None: Redis is
        unusable (this process paces itself meanwhile)."""
        if now < self._retry_at:
            return None
        from redis.exceptions import RedisError

        try:
            script = self._script or self._connect()
            answer = await script(keys=[self._key],
                                  args=[*self._args, self._refused, KEY_TTL_MS])
            wait_ms, rate = float(answer[0]), float(answer[1])
        except (RedisError, OSError, TimeoutError, ValueError, IndexError) as exc:
            await self._failed(now, exc)
            return None
        self._refused = 0.0
        if self._down:
            self._down = False
            self._log("shared limit reachable again: pacing with the fleet",
                      shared_limit=self._where)
        if not (math.isfinite(wait_ms) and math.isfinite(rate) and rate > 0):
            return None
        self.rate = rate
        return max(0.0, wait_ms / 1000.0), rate

    def _connect(self) -> Any:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._client = Redis.from_url(self._url, socket_timeout=TIMEOUT_S,
                                      socket_connect_timeout=TIMEOUT_S,
                                      retry=Retry(NoBackoff(), 0))
        self._script = self._client.register_script(GCRA_LUA)
        return self._script

    async def _failed(self, now: float, exc: BaseException) -> None:
        self._retry_at = retry_at(now)
        if not self._down:
            self._down = True
            self._log("shared limit unreachable: this process paces itself (\"auto\" from "
                      f"3/s) and asks again every {RETRY_S:g} s", shared_limit=self._where,
                      error=type(exc).__name__)
        await self.aclose()

    async def aclose(self) -> None:
        client, self._client, self._script = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                await client.aclose()


def shared_limit_of(settings: Settings) -> SharedLimit | None:
    """The shared budget `api.shared_limit` names, or None when it is not set."""
    api = settings.api
    if not api.shared_limit:
        return None
    from pracsuite_ingest.logs import get_logger

    auto = isinstance(api.requests_per_second, str)
    rate = 3.0 if auto else float(api.requests_per_second)
    return SharedLimit(api.shared_limit, api.vendor_api_key.get_secret_value(), auto=auto,
                       rate=min(rate, api.max_requests_per_second),
                       ceiling=api.max_requests_per_second, log=get_logger().warning)
