"""The sandbox in external-S3 mode: presigns for a real radosgw, validates by HEAD on it."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.models import Presigned
from pracsuite_ingest.sandbox import Credentials, Sandbox, SandboxOptions, add_arguments
from pracsuite_ingest.sandbox.external import ExternalS3, StoreWatcher, next_check
from pracsuite_ingest.sandbox.options import external_from_args
from pracsuite_ingest.upload import upload_file
from radosgw import RadosgwTarget, require_radosgw, s3_client, session_credentials


def external(target: RadosgwTarget, *, secret: str | None = None) -> ExternalS3:
    """The radosgw as the sandbox's external S3, with STS session keys when it has them."""
    creds = session_credentials(target)
    if creds is None:
        keys = Credentials(target.access_key, target.secret_key)
    else:
        keys = Credentials(creds["aws_access_key_id"], creds["aws_secret_access_key"],
                           creds["aws_session_token"])
    if secret is not None:
        keys = Credentials(keys.access_key, secret, keys.session_token)
    return ExternalS3(target.endpoint, target.bucket, target.region, keys)


async def presign(sb: Sandbox, session: aiohttp.ClientSession, client: str,
                  name: str) -> Presigned:
    headers = {"x-api-key": sb.vendor_key, "a-api-key": sb.practice_key}
    async with session.post(f"{sb.base_url}/patient/{client}/patient_attachment",
                            json={"file_name": name}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
    return Presigned(body["url"], tuple(body["fields"].items()))


async def stats_when(sb: Sandbox, done: Any, limit_s: float = 20.0) -> dict[str, Any]:
    """The sandbox's stats once `done(stats)` holds (or at the limit, for the assert)."""
    deadline = time.monotonic() + limit_s
    while True:
        stats = sb.stats()
        if done(stats) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.05)


@pytest.mark.radosgw
@pytest.mark.slow
async def test_a_cli_run_through_the_external_mode_is_validated_from_radosgw(
        tmp_path: Path) -> None:
    target = require_radosgw()
    ext = external(target)
    async with Sandbox(SandboxOptions(external_s3=ext, validation_delay_s=0.2)) as sb:
        rows = make_files(tmp_path, 12, ["1", "2", "1001"])
        cfg = config(tmp_path, sb)
        result = await run_cli("run", "--config", str(cfg), "--manifest",
                               str(write_manifest(tmp_path, rows)), cwd=tmp_path)
        stats = sb.stats()
    assert result.code == 0, result.stderr[-2000:]
    assert result.report(tmp_path / "reports")["summary"]["validated"] == 12
    assert stats["external_s3"]["found"] == 12
    assert stats["external_s3"]["errors"] == []
    assert stats["requests"]["s3_post"] == {}  # nothing went to a local S3
    keys = [r["key"] for c in stats["records_created"].values() for r in c["records"]]
    client = s3_client(target)
    sizes = {client.head_object(Bucket=target.bucket, Key=k)["ContentLength"] for k in keys}
    assert len(keys) == 12 and all(size > 1500 for size in sizes)


@pytest.mark.radosgw
async def test_presigns_carry_the_session_token_and_only_uploads_that_arrive_get_records(
        tmp_path: Path) -> None:
    target = require_radosgw()
    ext = external(target)
    file = tmp_path / "letter.pdf"
    file.write_bytes(b"%PDF-1.4 letter")
    async with Sandbox(SandboxOptions(external_s3=ext, validation_delay_s=0.1)) as sb, \
            aiohttp.ClientSession() as session:
        sent = await presign(sb, session, "7", "letter.pdf")
        await presign(sb, session, "7", "never sent.pdf")
        assert sent.url == f"{target.endpoint}/{target.bucket}"
        fields = dict(sent.fields)
        assert fields.get("x-amz-security-token") == ext.credentials.session_token
        await upload_file(session, sent, file, "letter.pdf")
        stats = await stats_when(sb, lambda s: s["records_created_total"] >= 1)
        await asyncio.sleep(0.3)  # the unsent one has had time to be (wrongly) found
        stats = sb.stats()
    assert stats["records_created_total"] == 1
    (record,) = stats["records_created"]["7"]["records"]
    assert record["file_name"] == "letter.pdf" and record["key"] == fields["key"]
    assert stats["external_s3"]["watching"] == 1  # the unsent presign is still looked for


@pytest.mark.radosgw
async def test_an_empty_upload_fails_validation_as_it_does_on_the_local_s3(
        tmp_path: Path) -> None:
    target = require_radosgw()
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    async with Sandbox(SandboxOptions(external_s3=external(target),
                                      validation_delay_s=0.1)) as sb, \
            aiohttp.ClientSession() as session:
        await upload_file(session, await presign(sb, session, "3", "empty.pdf"), empty,
                          "empty.pdf")
        stats = await stats_when(sb, lambda s: s["validation_failures"])
    assert [f["reason"] for f in stats["validation_failures"]] == ["the file is empty"]
    assert stats["records_created_total"] == 0


@pytest.mark.radosgw
async def test_heads_refused_by_the_external_s3_are_shown_in_the_stats(tmp_path: Path) -> None:
    target = require_radosgw()
    async with Sandbox(SandboxOptions(external_s3=external(target, secret="wrong" * 8))) as sb, \
            aiohttp.ClientSession() as session:
        await presign(sb, session, "1", "a.pdf")
        stats = await stats_when(sb, lambda s: s["external_s3"]["errors"])
    assert "403" in stats["external_s3"]["errors"][0]
    assert stats["records_created_total"] == 0


def test_the_external_flags_need_a_bucket_and_both_keys() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(["--external-s3-url", "http://127.0.0.1:7480/",
                            "--external-s3-access-key", "AK"])
    with pytest.raises(ValueError, match="--external-s3-bucket, --external-s3-secret-key"):
        external_from_args(ns, {})
    ns = parser.parse_args(["--external-s3-url", "http://127.0.0.1:7480/",
                            "--external-s3-bucket", "b", "--external-s3-access-key", "AK"])
    ext = external_from_args(ns, {"SANDBOX_EXTERNAL_S3_SECRET_KEY": "s",
                                  "SANDBOX_EXTERNAL_S3_SESSION_TOKEN": "t"})
    assert ext == ExternalS3("http://127.0.0.1:7480", "b", "us-east-1",
                             Credentials("AK", "s", "t"))
    assert external_from_args(parser.parse_args([]), {}) is None


def test_a_presigned_key_is_looked_for_often_at_first_then_less_often() -> None:
    intervals = [next_check(age) for age in (0.0, 0.1, 1.0, 4.0, 60.0, 3600.0)]
    assert intervals == sorted(intervals)
    assert intervals[0] < 0.1 and intervals[-1] <= 2.0


async def test_a_key_whose_head_is_on_the_wire_still_counts_as_watched() -> None:
    # The stats are read while the watcher's HEAD for a key is in flight: that key was
    # taken off the queue, but it is still looked for (this read 0 before, at random).
    on_the_wire = asyncio.Event()
    answer = asyncio.Event()

    class SlowLookup:
        async def size_of(self, bucket: str, key: str) -> int | None:
            on_the_wire.set()
            await answer.wait()
            return None

    ext = ExternalS3("http://127.0.0.1:1", "b", "us-east-1", Credentials("AK", "s"))
    watcher = StoreWatcher(ext, SlowLookup(), lifetime_s=60.0,  # type: ignore[arg-type]
                           on_stored=lambda *_: None)
    watcher.start()
    try:
        watcher.watch("temp/1/never-sent.pdf")
        assert watcher.watching == 1
        await asyncio.wait_for(on_the_wire.wait(), 5)
        during = watcher.watching
        answer.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        after = watcher.watching
    finally:
        await watcher.aclose()
    assert during == 1
    assert after == 1
