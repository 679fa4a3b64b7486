"""One run at a time per practice (and shard), where `api.shared_limit` gives a Redis.

Two workers on one practice with separate state files cannot see each other's uploads
(`reconcile/twins.py` says so where it can; PracSuite offers no lease). Where the fleet
shares a Redis for its rate budget, a run first takes a lease in it: a key named by a
hash of the API's URL, the practice key and the shard (never a key itself), holding
the run id, host and pid, set only if absent and kept alive while the run lasts. A
second run on the same practice is refused (exit 3) naming the holder; the lease lapses
`TTL_S` after its holder stops renewing it (a kill), so a crash never locks a practice
out for long. Redis unreachable: said, and the run goes on without a lease (the
migration never stops for Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from pracsuite_ingest.errors import Fatal
from pracsuite_ingest.shared_limit import TIMEOUT_S, where

KEY_PREFIX = "pracsuite-ingest:practice:"
TTL_S = 60.0
RENEW_S = 15.0

# Only the holder (the same value) may renew or release it.
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class PracticeBusy(Fatal):
    """Another run holds this practice's lease."""


def lease_key(base_url: str, practice_api_key: str, shard: str) -> str:
    """The lease's Redis key: a hash, never the practice key."""
    seed = f"pracsuite-ingest lease\0{base_url.rstrip('/')}\0{practice_api_key}\0{shard}"
    return KEY_PREFIX + hashlib.sha256(seed.encode("utf-8")).hexdigest()[:32]


def holder(run_id: str) -> str:
    return f"run {run_id} on {socket.gethostname()} (pid {os.getpid()})"


def busy_text(held_by: str) -> str:
    return (f"another run is migrating this practice: {held_by} holds its lease in "
            "api.shared_limit's Redis; two workers on one practice cannot see each other's "
            "uploads. Wait for it to finish (a killed run's lease lapses within "
            f"{TTL_S:.0f} s), then run again")


@contextlib.asynccontextmanager
async def practice_lease(url: str, base_url: str, practice_api_key: str, shard: str,
                         run_id: str, log: Any) -> AsyncIterator[None]:
    """Hold the practice's lease for the body; PracticeBusy if another run holds it."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    key, value = lease_key(base_url, practice_api_key, shard), holder(run_id)
    client = Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        try:
            taken = await client.set(key, value, nx=True, px=int(TTL_S * 1000))
            held_by = None if taken else await client.get(key)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("practice lease not taken: Redis unreachable; the run goes on "
                        "without it", shared_limit=where(url), error=type(exc).__name__)
            yield
            return
        if not taken:
            text = held_by.decode("utf-8", "replace") if isinstance(held_by, bytes) else "?"
            raise PracticeBusy(busy_text(text))
        try:
            async with asyncio.TaskGroup() as tg:
                renewing = tg.create_task(_renew(client, key, value, log, url))
                try:
                    yield
                finally:
                    renewing.cancel()
        except BaseExceptionGroup as group:  # the body's own error (renewing never raises)
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await client.eval(RELEASE_LUA, 1, key, value)
    finally:
        with contextlib.suppress(Exception):  # closing a broken connection
            await client.aclose()


async def _renew(client: Any, key: str, value: str, log: Any, url: str) -> None:
    from redis.exceptions import RedisError

    while True:
        await asyncio.sleep(RENEW_S)
        try:
            await client.eval(RENEW_LUA, 1, key, value, int(TTL_S * 1000))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("practice lease not renewed: Redis unreachable",
                        shared_limit=where(url), error=type(exc).__name__)


def lease_for(settings: Any, run_id: str, shard: str, log: Any
              ) -> contextlib.AbstractAsyncContextManager[None]:
    """The practice's lease where `api.shared_limit` names a Redis; else nothing."""
    api = settings.api
    if not api.shared_limit:
        return contextlib.nullcontext()
    return practice_lease(api.shared_limit, api.base_url,
                          api.practice_api_key.get_secret_value(), shard, run_id, log)
