"""The upload path's policy cases, against the sandbox's S3 and a real Ceph radosgw.

Each case presigns a POST, changes what the case changes, and sends it with the
worker's own `upload_file` (fields in order, file last, streamed with a length). Both
servers must answer alike: that is what holds the sandbox to what S3 enforces.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from pracsuite_ingest import MAX_FILE_BYTES
from pracsuite_ingest.errors import Permanent, PolicyExpired
from pracsuite_ingest.models import Presigned
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.sandbox.sigv4 import presign_post as sandbox_presign
from pracsuite_ingest.upload import build_form, parse_s3_error, upload_file
from radosgw import presign_post as rgw_presign
from radosgw import require_radosgw, s3_client


@dataclass
class Target:
    name: str
    presign: Callable[[str, int, int], Presigned]
    stored: Callable[[str], bool]


@pytest.fixture(params=["sandbox", pytest.param("radosgw", marks=pytest.mark.radosgw)])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    if request.param == "sandbox":
        async with Sandbox(SandboxOptions()) as sb:
            def presign(key: str, max_size: int, expires_in: int) -> Presigned:
                url, fields = sandbox_presign(
                    url=f"{sb.s3_url}/{sb.bucket}", bucket=sb.bucket, key=key,
                    creds=sb.s3_credentials, region="ap-southeast-2", now=datetime.now(UTC),
                    expires_in_s=expires_in, max_bytes=max_size)
                return Presigned(url, tuple(fields))

            yield Target("sandbox", presign, lambda key: (sb.data_dir / sb.bucket / key).is_file())
        return
    rgw = require_radosgw()
    client = s3_client(rgw)

    def presign_rgw(key: str, max_size: int, expires_in: int) -> Presigned:
        url, fields = rgw_presign(rgw, key, max_size=max_size, expires_in=expires_in,
                                  policy_field="Policy")  # PracSuite's spelling
        return Presigned(url, tuple(fields))

    def stored(key: str) -> bool:
        try:
            client.head_object(Bucket=rgw.bucket, Key=key)
        except Exception:  # botocore's ClientError for 404
            return False
        return True

    yield Target("radosgw", presign_rgw, stored)


def new_key(name: str = "letter.pdf") -> str:
    return f"temp/1/42/1/1/{uuid.uuid4()}/{name}"


def replace_field(p: Presigned, name: str, change: Callable[[str], str]) -> Presigned:
    return Presigned(p.url, tuple((k, change(v) if k == name else v) for k, v in p.fields))


def widen_policy(encoded: str) -> str:
    policy = json.loads(base64.b64decode(encoded))
    for cond in policy["conditions"]:
        if isinstance(cond, list) and cond[0] == "content-length-range":
            cond[2] = cond[2] * 2
    return base64.b64encode(json.dumps(policy).encode()).decode()


def flip(sig: str) -> str:
    return sig[:-1] + ("0" if sig[-1] != "0" else "1")


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    f = tmp_path / "letter.pdf"
    f.write_bytes(b"%PDF-1.4 " + bytes(range(256)) * 8)
    return f


async def send(p: Presigned, path: Path, name: str) -> None:
    async with aiohttp.ClientSession() as session:
        await upload_file(session, p, path, name)


async def test_correct_upload_is_stored(target: Target, small_file: Path) -> None:
    key = new_key()
    await send(target.presign(key, 1 << 20, 60), small_file, "letter.pdf")
    assert target.stored(key)


@pytest.mark.parametrize("case", ["key", "signature", "policy", "extra_field"])
async def test_tampered_form_is_refused_403(target: Target, small_file: Path, case: str) -> None:
    key = new_key()
    p = target.presign(key, 1 << 20, 60)
    if case == "key":
        p = replace_field(p, "key", lambda v: v.replace("letter.pdf", "other.pdf"))
    elif case == "signature":
        p = replace_field(p, "x-amz-signature", flip)
    elif case == "policy":
        p = replace_field(p, "Policy", widen_policy)
    else:
        p = Presigned(p.url, (*p.fields, ("x-extra", "1")))
    with pytest.raises(Permanent, match=r"^S3 403 "):
        await send(p, small_file, "letter.pdf")
    assert not target.stored(key)
    assert not target.stored(key.replace("letter.pdf", "other.pdf"))


async def test_body_over_content_length_range_is_400_entity_too_large(
        target: Target, small_file: Path) -> None:
    key = new_key()
    with pytest.raises(Permanent, match=r"^S3 400 EntityTooLarge"):
        await send(target.presign(key, 100, 60), small_file, "letter.pdf")
    assert not target.stored(key)


async def test_expired_policy_is_403_and_means_presign_again(
        target: Target, small_file: Path) -> None:
    key = new_key()
    p = target.presign(key, 1 << 20, 1)
    await asyncio.sleep(2.1)
    # Sent as it is: the server refuses it.
    async with aiohttp.ClientSession() as session:
        with small_file.open("rb") as fh:
            async with session.post(p.url, data=build_form(p, fh, "letter.pdf")) as resp:
                status, body = resp.status, await resp.read()
    code, _ = parse_s3_error(body)
    assert (status, code) == (403, "AccessDenied")
    assert not target.stored(key)
    # The worker's path: S3 judges (radosgw says only AccessDenied; its Date header,
    # never the local clock, shows the policy expired), as "presign again".
    with pytest.raises(PolicyExpired):
        await send(p, small_file, "letter.pdf")


async def test_non_ascii_key_is_stored(target: Target, small_file: Path) -> None:
    name = "Échographie 心电图, \"final\".pdf"
    key = new_key(name)
    await send(target.presign(key, 1 << 20, 60), small_file, name)
    assert target.stored(key)


async def test_100_mb_file_streams_and_is_stored(target: Target, tmp_path: Path) -> None:
    big = tmp_path / "scan.pdf"
    with big.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES)
    key = new_key("scan.pdf")
    await send(target.presign(key, MAX_FILE_BYTES, 300), big, "scan.pdf")
    assert target.stored(key)
