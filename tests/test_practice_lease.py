"""With `api.shared_limit` (a Redis the fleet shares), a second run on the same practice
is refused while the first holds the practice's lease (issue 27: two workers with
separate state files on one practice cannot see each other's uploads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from fleet_runs import redis_server
from needs import program
from pracsuite_ingest.practice_lease import holder, lease_key
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions


@pytest.fixture
def redis_program() -> str:
    return program("redis-server", package="redis-server")


async def test_a_second_run_on_a_practice_whose_lease_is_held_is_refused_and_sends_nothing(
        tmp_path: Path, redis_program: str) -> None:
    import redis.asyncio as aioredis

    async with redis_server(redis_program, tmp_path / "redis") as server, \
            Sandbox(SandboxOptions(validation_delay_s=0.1)) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 3, ["7"]))
        cfg = config(tmp_path, sb, api={"shared_limit": server.url})
        key = lease_key(sb.base_url, sb.practice_key, "")
        assert sb.practice_key not in key and sb.vendor_key not in key
        other = holder("2026-12-04T00-00-00Z-abcd")
        client = aioredis.Redis.from_url(server.url)
        try:
            await client.set(key, other, px=60_000)  # another worker's run holds it
            refused = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                                    cwd=tmp_path)
            presigns_refused = sb.stats()["presigned"]
            await client.delete(key)  # it finished
            done = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                                 cwd=tmp_path)
            left = await client.exists(key)
        finally:
            await client.aclose()
    assert refused.code == 3, refused.stderr[-2000:]
    assert "another run is migrating this practice" in refused.stderr
    assert "2026-12-04T00-00-00Z-abcd" in refused.stderr
    assert presigns_refused == 0  # nothing was sent
    assert done.code == 0, done.stderr[-2000:]
    assert left == 0  # released at the end of the run
