"""Whether a presigned POST has expired is S3's to judge (docs/contract.md, "Guarantees"): the
worker, run with its clock hours ahead or minutes behind (Debian's `faketime`, which
fakes the clock of that one process through LD_PRELOAD), sends every policy once and
each row ends validated; only S3's refusal makes it presign again."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from needs import program
from pracsuite_ingest.models import Presigned
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.upload import is_expired, s3_clock

pytestmark = pytest.mark.slow

@pytest.mark.parametrize("offset", ["+2h", "+26h", "-10m"])
async def test_a_wrong_clock_never_refuses_or_represigns_a_policy_s3_accepts(
        tmp_path: Path, offset: str) -> None:
    faketime = program("faketime", package="faketime")
    probe = await asyncio.create_subprocess_exec(
        faketime, "-f", offset, sys.executable, "-c", "import time; print(time.time())",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await probe.communicate()
    skew = float(out) - datetime.now(UTC).timestamp()
    # A one-hour policy (the sandbox's default, as PracSuite's guide implies): two
    # hours ahead, every policy looks expired to this machine's clock.
    async with Sandbox(SandboxOptions(validation_delay_s=0.1, policy_lifetime_s=3600)) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 4, ["1", "2"], size=200))
        cfg = config(tmp_path, sb)
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path, prefix=[faketime, "-f", offset])
        stats = sb.stats()
    sign = -1 if offset.startswith("-") else 1
    assert sign * skew > 9 * 60, f"faketime did not move the clock ({skew:.0f} s)"
    assert result.code == 0, result.stderr[-3000:]
    report = result.report(tmp_path / "reports")
    assert [it["status"] for it in report["items"]] == ["validated"] * 4
    # One presign and one upload per file: nothing presigned again.
    assert stats["requests"]["presign"] == {"200": 4}
    assert stats["requests"]["s3_post"] == {"204": 4}


def _presigned(expiry: datetime) -> Presigned:
    import base64
    import json

    policy = base64.b64encode(json.dumps(
        {"expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()).decode()
    return Presigned(url="https://s3.example/b", fields=(("key", "k/a.pdf"), ("Policy", policy)))


def test_expiry_is_read_against_s3s_date_header_never_the_local_clock() -> None:
    expiry = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    p = _presigned(expiry)
    before = s3_clock({"Date": "Mon, 30 Nov 2026 11:59:00 GMT"})
    after = s3_clock({"Date": "Mon, 30 Nov 2026 12:00:01 GMT"})
    assert before is not None and after is not None
    assert not is_expired(p, before) and is_expired(p, after)
    assert s3_clock({}) is None and s3_clock({"Date": "yesterday"}) is None
    assert not is_expired(p, expiry - timedelta(seconds=1))
