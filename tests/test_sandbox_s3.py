"""The sandbox's S3 over real sockets: the conformance cases of s3-test-servers.md,
streaming, and the validation that turns an upload into exactly one record."""

from __future__ import annotations

import asyncio
import base64
import json
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from e2e import api_keys as _keys
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions, presign_post
from pracsuite_ingest.sandbox.store import LocalStore

FAST = {"clients": ("1", "2", "42"), "existing_records_per_client": 1, "validation_delay_s": 0.05}


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxOptions(**FAST)) as sandbox:  # type: ignore[arg-type]
        yield sandbox


async def _presign(
    sb: Sandbox, session: aiohttp.ClientSession, file_name: str, client: str = "42"
) -> tuple[str, dict[str, str]]:
    url = f"{sb.base_url}/patient/{client}/patient_attachment"
    async with session.post(url, json={"file_name": file_name}, headers=_keys(sb)) as response:
        assert response.status == 200
        body = await response.json()
    return body["url"], body["fields"]


def _form(fields: dict[str, str], data: Any, file_name: str = "f.pdf") -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", data, filename=file_name, content_type="application/octet-stream")
    return form


async def _upload(
    session: aiohttp.ClientSession, url: str, fields: dict[str, str], data: Any = b"%PDF-1.7 hi"
) -> tuple[int, str]:
    async with session.post(url, data=_form(fields, data)) as response:
        return response.status, await response.text()


async def _records(sb: Sandbox, session: aiohttp.ClientSession, client: str) -> list[Any]:
    url = f"{sb.base_url}/patient/{client}/patient_attachment"
    async with session.get(url, headers=_keys(sb)) as response:
        body = await response.json()
    records: list[Any] = body["patient_attachments"]
    return records


async def _settle(sb: Sandbox) -> None:
    """Wait until no validation is pending (the delay is short in these tests)."""
    await asyncio.sleep(0.06)
    for _ in range(100):
        if sb.stats()["validations_pending"] == 0:
            return
        await asyncio.sleep(0.01)
    pytest.fail("validation never finished")


async def test_correct_upload_is_204_and_becomes_exactly_one_record(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    url, fields = await _presign(sb, session, "Referral letter.pdf")
    status, text = await _upload(session, url, fields)
    assert (status, text) == (204, "")
    stored = sb.data_dir / sb.bucket / fields["key"]
    assert stored.read_bytes() == b"%PDF-1.7 hi"
    assert len(await _records(sb, session, "42")) == 1  # the pre-existing one only, for now
    await _settle(sb)
    # The same key uploaded again does not make a second record.
    assert (await _upload(session, url, fields))[0] == 204
    await _settle(sb)
    records = await _records(sb, session, "42")
    assert len(records) == 2
    assert records[-1]["file_size"] == 11
    stats = sb.stats()
    assert stats["records_created"]["42"]["count"] == 1
    assert stats["records_created"]["42"]["records"][0]["key"] == fields["key"]
    assert stats["uploads_stored"] == 2


async def test_stored_object_can_be_read_back_with_get_and_head(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    url, fields = await _presign(sb, session, "a.pdf")
    await _upload(session, url, fields, b"12345")
    async with session.head(f"{url}/{fields['key']}") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "5"
    async with session.get(f"{url}/{fields['key']}") as response:
        assert await response.read() == b"12345"
    async with session.get(f"{url}/temp/nothing.pdf") as response:
        assert response.status == 404
        assert "<Code>NoSuchKey</Code>" in await response.text()


async def test_a_pre_existing_record_s_object_is_read_through_its_presign_url(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    # Seeded objects are written at their first read: S3 must still serve them.
    record = (await _records(sb, session, "42"))[0]
    url = f"{sb.base_url}/patient_attachment/{record['attachment_client_id']}/presign_url"
    async with session.get(url, headers=_keys(sb)) as response:
        assert response.status == 200
        get_url = (await response.json())["url"]
    async with session.get(get_url) as response:
        assert response.status == 200
        assert (await response.read()).startswith(b"%PDF-")


def test_an_upload_to_a_seeded_key_is_never_undone_by_a_later_read(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.seed("b", ["a/one.pdf", "a/two.pdf"], b"seeded")
    assert store.stat_size("b", "a/one.pdf") == len(b"seeded")
    store.put_bytes("b", "a/two.pdf", b"uploaded bytes")  # before anything read it
    path = store.stored_path("b", "a/two.pdf")
    assert path is not None and path.read_bytes() == b"uploaded bytes"
    assert store.stat_size("b", "a/none.pdf") is None
    with pytest.raises(ValueError):
        store.seed("b", ["../out.pdf"], b"x")


def _error_code(text: str) -> str:
    return text.split("<Code>")[1].split("</Code>")[0]


def _tamper_policy(fields: dict[str, str]) -> None:
    policy = json.loads(base64.b64decode(fields["Policy"]))
    policy["conditions"][2] = ["content-length-range", 0, 10**12]
    fields["Policy"] = base64.b64encode(json.dumps(policy).encode()).decode()


@pytest.mark.parametrize(
    ("tamper", "status", "code"),
    [
        (lambda f: f.update(key=f["key"].replace(".pdf", ".exe")), 403, "AccessDenied"),
        (lambda f: f.update({"x-amz-signature": "f" * 64}), 403, "SignatureDoesNotMatch"),
        (_tamper_policy, 403, "SignatureDoesNotMatch"),
        (lambda f: f.update({"Content-Type": "application/pdf"}), 403, "AccessDenied"),
        (lambda f: f.pop("x-amz-security-token"), 403, "InvalidToken"),
    ],
    ids=["key-changed", "signature-changed", "policy-changed", "extra-field", "token-missing"],
)
async def test_tampered_upload_is_refused_and_nothing_is_stored(
    sb: Sandbox, session: aiohttp.ClientSession, tamper: Any, status: int, code: str
) -> None:
    url, fields = await _presign(sb, session, "a.pdf")
    original_key = fields["key"]
    tamper(fields)
    got, text = await _upload(session, url, fields)
    assert (got, _error_code(text)) == (status, code)
    assert text.startswith("<?xml")
    assert "<RequestId>" in text
    assert not (sb.data_dir / sb.bucket / original_key).exists()
    assert sb.stats()["uploads_stored"] == 0


def _hand_presigned(sb: Sandbox, key: str, *, now: datetime, max_bytes: int) -> dict[str, str]:
    _, pairs = presign_post(
        url="unused",
        bucket=sb.bucket,
        key=key,
        creds=sb.s3_credentials,
        region="ap-southeast-2",
        now=now,
        expires_in_s=60,
        max_bytes=max_bytes,
    )
    return dict(pairs)


async def test_body_over_content_length_range_is_400_entity_too_large(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    fields = _hand_presigned(sb, "temp/x/small.pdf", now=datetime.now(UTC), max_bytes=10)
    url = f"{sb.s3_url}/{sb.bucket}"
    status, text = await _upload(session, url, fields, b"x" * 11)
    assert (status, _error_code(text)) == (400, "EntityTooLarge")
    assert not (sb.data_dir / sb.bucket / "temp/x/small.pdf").exists()
    assert (await _upload(session, url, fields, b"x" * 10))[0] == 204


async def test_expired_policy_is_403(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    past = datetime.now(UTC) - timedelta(minutes=5)
    fields = _hand_presigned(sb, "temp/x/old.pdf", now=past, max_bytes=100)
    status, text = await _upload(session, f"{sb.s3_url}/{sb.bucket}", fields)
    assert (status, _error_code(text)) == (403, "AccessDenied")
    assert "Policy expired" in text


async def test_non_ascii_key_is_stored_under_its_name(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    name = "Lettre d\u2019Andr\u00e9 \u2013 \u00e9t\u00e9 日本.pdf"
    url, fields = await _presign(sb, session, name)
    assert (await _upload(session, url, fields))[0] == 204
    assert (sb.data_dir / sb.bucket / fields["key"]).is_file()
    await _settle(sb)
    assert sb.stats()["records_created"]["42"]["records"][0]["file_name"].endswith("日本.pdf")


async def test_chunked_body_is_411(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    url, fields = await _presign(sb, session, "a.pdf")

    async def body() -> AsyncIterator[bytes]:
        yield b"%PDF"

    status, text = await _upload(session, url, fields, body())
    assert (status, _error_code(text)) == (411, "MissingContentLength")


async def test_fields_after_the_file_are_ignored(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    url, fields = await _presign(sb, session, "a.pdf")
    form = _form(fields, b"data")
    form.add_field("submit", "Upload")
    async with session.post(url, data=form) as response:
        assert response.status == 204


async def test_form_without_a_file_is_400(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    url, fields = await _presign(sb, session, "a.pdf")
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("x-ignore-multipart", "1", content_type="text/plain")  # keep it multipart
    async with session.post(url, data=form) as response:
        assert response.status == 400


async def test_unknown_bucket_is_404(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    _, fields = await _presign(sb, session, "a.pdf")
    status, text = await _upload(session, f"{sb.s3_url}/other-bucket", fields)
    assert (status, _error_code(text)) == (404, "NoSuchBucket")


@pytest.mark.parametrize(
    ("data", "reason"), [(b"", "the file is empty"), (b"x", "refused by reject_names")]
)
async def test_failed_validation_creates_no_record(
    session: aiohttp.ClientSession, data: bytes, reason: str
) -> None:
    options = SandboxOptions(**FAST, reject_names=r"^virus")  # type: ignore[arg-type]
    async with Sandbox(options) as sb:
        name = "virus.pdf" if data else "empty.pdf"
        url, fields = await _presign(sb, session, name)
        assert (await _upload(session, url, fields, data))[0] == 204
        await _settle(sb)
        stats = sb.stats()
        assert stats["records_created"] == {}
        assert reason in stats["validation_failures"][0]["reason"]
        assert len(await _records(sb, session, "42")) == 1


async def test_upload_is_streamed_to_disk_with_flat_memory(
    sb: Sandbox, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    size = 24 * 1024 * 1024
    source = tmp_path / "big.pdf"
    with source.open("wb") as handle:
        handle.truncate(size)
    url, fields = await _presign(sb, session, "big.pdf")
    tracemalloc.start()
    try:
        with source.open("rb") as handle:
            status, _ = await _upload(session, url, fields, handle)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 204
    assert (sb.data_dir / sb.bucket / fields["key"]).stat().st_size == size
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte upload"


async def test_sandbox_exit_cancels_waiting_validations(session: aiohttp.ClientSession) -> None:
    options = SandboxOptions(**(FAST | {"validation_delay_s": 30.0}))  # type: ignore[arg-type]
    async with Sandbox(options) as sb:
        url, fields = await _presign(sb, session, "a.pdf")
        assert (await _upload(session, url, fields))[0] == 204
        assert sb.stats()["validations_pending"] == 1
    # Leaving the block did not wait 30 s, and nothing was left running.
    assert sb.stats()["validations_pending"] == 0
