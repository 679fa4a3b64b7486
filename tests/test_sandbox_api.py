"""The sandbox's PracSuite API over real sockets: keys, errors, presign, paging, records."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from e2e import api_keys as _keys
from pracsuite_ingest.sandbox import (
    DescriptionMode,
    Sandbox,
    SandboxOptions,
    add_arguments,
    options_from_args,
    serve_forever,
)


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    options = SandboxOptions(clients=("1", "2", "7"), existing_records_per_client=5)
    async with Sandbox(options) as sandbox:
        yield sandbox


async def _get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with session.get(url, headers=headers, allow_redirects=False) as response:
        body = await response.json(content_type=None) if response.status != 307 else None
        return response.status, body, response


async def test_missing_vendor_key_is_403_missing_authentication_token(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    status, body, response = await _get(
        session, f"{sb.base_url}/patient/1/patient_attachment", {"a-api-key": sb.practice_key}
    )
    assert status == 403
    assert body["error"]["code"] == "MISSING_AUTHENTICATION_TOKEN"
    assert "x-api-key" in body["error"]["detail"]
    assert body["request_id"] == response.headers["x-request-id"]


async def test_missing_practice_key_is_403_naming_a_api_key(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    status, body, _ = await _get(
        session, f"{sb.base_url}/patient/1/patient_attachment", {"x-api-key": sb.vendor_key}
    )
    assert status == 403
    assert body["error"]["code"] == "MISSING_AUTHENTICATION_TOKEN"
    assert "a-api-key" in body["error"]["detail"]


@pytest.mark.parametrize("header", ["x-api-key", "a-api-key"])
async def test_wrong_key_is_401_unauthorized_naming_the_header(
    sb: Sandbox, session: aiohttp.ClientSession, header: str
) -> None:
    headers = _keys(sb) | {header: "wrong"}
    status, body, _ = await _get(session, f"{sb.base_url}/patient/1/patient_attachment", headers)
    assert status == 401
    assert body["error"]["code"] == "UNAUTHORIZED"
    assert header in body["error"]["title"]
    assert header in body["error"]["detail"]


async def test_unknown_path_or_method_is_403_even_with_good_keys(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    status, body, _ = await _get(session, f"{sb.base_url}/patients", _keys(sb))
    assert (status, body["error"]["code"]) == (403, "MISSING_AUTHENTICATION_TOKEN")
    url = f"{sb.base_url}/patient/1/patient_attachment"
    async with session.delete(url, headers=_keys(sb)) as response:
        assert response.status == 403


async def test_unknown_client_is_404(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    status, body, _ = await _get(session, f"{sb.base_url}/patient/99/patient_attachment", _keys(sb))
    assert (status, body["error"]["code"]) == (404, "NOT_FOUND")
    async with session.post(
        f"{sb.base_url}/patient/99/patient_attachment",
        json={"file_name": "a.pdf"},
        headers=_keys(sb),
    ) as response:
        assert response.status == 404


@pytest.mark.parametrize(
    "body",
    [
        {"json": {}},
        {"json": {"file_name": ""}},
        {"json": {"file_name": "no-extension"}},
        {"json": {"file_name": 12}},
        {"json": ["a.pdf"]},
        {"data": b"file_name=a.pdf"},
    ],
)
async def test_bad_file_name_or_body_is_400_invalid_params(
    sb: Sandbox, session: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    url = f"{sb.base_url}/patient/1/patient_attachment"
    async with session.post(url, headers=_keys(sb), **body) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "INVALID_PARAMS"


async def test_presign_returns_the_s3_url_and_fields_in_order(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    url = f"{sb.base_url}/patient/7/patient_attachment"
    async with session.post(url, json={"file_name": "Lettre été.pdf"}, headers=_keys(sb)) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["url"] == f"{sb.s3_url}/{sb.bucket}"
    assert list(body["fields"]) == [
        "key",
        "Policy",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-signature",
        "x-amz-security-token",
    ]
    assert re.fullmatch(r"temp/1/7/\d+/\d+/[0-9a-f-]{36}/Lettre été\.pdf", body["fields"]["key"])
    assert sb.stats()["presigned"] == 1


async def test_policy_lifetime_sets_the_policy_expiration(session: aiohttp.ClientSession) -> None:
    async with Sandbox(SandboxOptions(clients=("1",), policy_lifetime_s=120)) as sb:
        url = f"{sb.base_url}/patient/1/patient_attachment"
        async with session.post(url, json={"file_name": "a.pdf"}, headers=_keys(sb)) as resp:
            fields = (await resp.json())["fields"]
    policy = json.loads(base64.b64decode(fields["Policy"]))
    expires = datetime.fromisoformat(policy["expiration"])
    assert abs((expires - datetime.now(UTC)).total_seconds() - 120) < 5
    assert ["content-length-range", 0, 104_857_600] in policy["conditions"]


async def _collect_pages(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    bodies = []
    next_url: str | None = url
    while next_url is not None:
        status, body, _ = await _get(session, next_url, headers)
        assert status == 200
        bodies.append(body)
        next_url = body["links"].get("next")
    return bodies


async def test_paging_follows_links_next_and_omits_it_on_the_last_page(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    url = f"{sb.base_url}/patient/2/patient_attachment?page_size=2"
    bodies = await _collect_pages(session, url, _keys(sb))
    assert [len(b["patient_attachments"]) for b in bodies] == [2, 2, 1]
    assert all(b["total_entries"] == 5 for b in bodies)
    assert "previous" not in bodies[0]["links"]
    assert bodies[1]["links"]["previous"] == bodies[0]["links"]["self"]
    assert "next" not in bodies[2]["links"]
    assert bodies[0]["links"]["self"].startswith("http://")
    ids = [r["attachment_client_id"] for b in bodies for r in b["patient_attachments"]]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


@pytest.mark.parametrize(
    ("query", "status"),
    [("page_size=101", 400), ("page_size=100", 200), ("page=0", 400), ("page=x", 400)],
)
async def test_page_size_over_100_and_bad_pages_are_400(
    sb: Sandbox, session: aiohttp.ClientSession, query: str, status: int
) -> None:
    got, body, _ = await _get(
        session, f"{sb.base_url}/patient/1/patient_attachment?{query}", _keys(sb)
    )
    assert got == status
    if status == 400:
        assert body["error"]["code"] == "INVALID_PARAMS"


@pytest.mark.parametrize("list_key", ["attachments", "items", "data", "results"])
async def test_list_key_names_the_envelope(session: aiohttp.ClientSession, list_key: str) -> None:
    async with Sandbox(SandboxOptions(clients=("1",), list_key=list_key)) as sb:
        status, body, _ = await _get(
            session, f"{sb.base_url}/patient/1/patient_attachment", _keys(sb)
        )
    assert status == 200
    assert set(body) == {list_key, "total_entries", "links"}
    assert len(body[list_key]) == 3


async def test_bare_list_is_an_array_paged_until_a_short_page(
    session: aiohttp.ClientSession,
) -> None:
    options = SandboxOptions(clients=("1",), list_key="bare", existing_records_per_client=5)
    async with Sandbox(options) as sb:
        pages = []
        for page in (1, 2, 3):
            url = f"{sb.base_url}/patient/1/patient_attachment?page={page}&page_size=2"
            status, body, _ = await _get(session, url, _keys(sb))
            assert status == 200
            pages.append(body)
    assert [type(p) for p in pages] == [list, list, list]
    assert [len(p) for p in pages] == [2, 2, 1]


async def test_record_has_no_file_name_and_presign_url_gives_it(
    session: aiohttp.ClientSession,
) -> None:
    options = SandboxOptions(clients=("5",), description_mode=DescriptionMode.FILE_NAME)
    async with Sandbox(options) as sb:
        _, listing, _ = await _get(
            session, f"{sb.base_url}/patient/5/patient_attachment", _keys(sb)
        )
        first = listing["patient_attachments"][0]
        status, record, _ = await _get(session, first["links"]["self"], _keys(sb))
        assert status == 200
        assert set(record) == {
            "row_num",
            "total_rows",
            "links",
            "tenant_id",
            "attachment_client_id",
            "client_id",
            "user_id",
            "file_date",
            "description",
            "file_type",
            "file_size",
        }
        assert isinstance(record["attachment_client_id"], int)
        assert str(record["attachment_client_id"]) in record["links"]["self"]
        assert record["client_id"] == 5
        assert record["file_type"] == "PDF"
        _, presigned, _ = await _get(session, record["links"]["presign_url"], _keys(sb))
        assert presigned["file_name"] == "Referral letter.pdf"
        assert record["description"] == "Referral letter.pdf"
        assert set(presigned) == {"url", "expires", "file_name"}
        status, _, redirect = await _get(session, record["links"]["content"], _keys(sb))
        assert status == 307
        async with session.get(redirect.headers["Location"]) as content:
            assert content.status == 200
            assert (await content.read()).startswith(b"%PDF")


async def test_unknown_record_is_404(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    for path in ("", "/presign_url", "/content"):
        status, body, _ = await _get(
            session, f"{sb.base_url}/patient_attachment/999999{path}", _keys(sb)
        )
        assert (status, body["error"]["code"]) == (404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [(DescriptionMode.EMPTY, ""), (DescriptionMode.TEXT, "Uploaded via API")],
)
async def test_description_mode(
    session: aiohttp.ClientSession, mode: DescriptionMode, expected: str
) -> None:
    async with Sandbox(SandboxOptions(clients=("1",), description_mode=mode)) as sb:
        _, body, _ = await _get(session, f"{sb.base_url}/patient/1/patient_attachment", _keys(sb))
    assert {r["description"] for r in body["patient_attachments"]} == {expected}


async def test_admin_stats_need_no_keys_and_count_requests(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    await _get(session, f"{sb.base_url}/patient/1/patient_attachment", _keys(sb))
    await _get(session, f"{sb.base_url}/patient/1/patient_attachment", {})
    status, stats, _ = await _get(session, f"{sb.admin_url}/stats", {})
    assert status == 200
    assert stats["requests"]["list"] == {"200": 1, "403": 1}
    assert stats == sb.stats()


def test_cli_flags_become_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(
        [
            "--port",
            "9000",
            "--list-key",
            "bare",
            "--description-mode",
            "file_name",
            "--fail-429",
            "0.25",
            "--throttle-style",
            "gateway",
            "--latency-ms",
            "5,20",
            "--clients",
            "1-3,1001",
            "--vendor-key",
            "v",
            "--no-session-token",
            "--no-record-links",
        ]
    )
    options = options_from_args(ns)
    assert (options.api_port, options.s3_port) == (9000, 9001)
    assert options.list_key == "bare"
    assert options.description_mode is DescriptionMode.FILE_NAME
    assert options.fail_rate_429 == 0.25
    assert options.latency_ms == (5, 20)
    assert options.clients == ("1", "2", "3", "1001")
    assert options.vendor_key == "v"
    assert options.session_token is None
    assert options.record_links is False
    assert options.record_requests is False  # the command runs until stopped: keep nothing
    defaults = options_from_args(parser.parse_args([]))
    assert (defaults.api_port, defaults.s3_port) == (8700, 8701)
    assert defaults.record_links is True
    assert defaults.practice_key != options_from_args(parser.parse_args([])).practice_key


async def test_serve_forever_prints_a_config_snippet_and_stops_when_cancelled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = SandboxOptions(vendor_key="vk", practice_key="pk", clients=("1",))
    task = asyncio.create_task(serve_forever(options))
    out = ""
    for _ in range(100):
        await asyncio.sleep(0.02)
        out += capsys.readouterr().out
        if "runs until Ctrl-C" in out:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lines = out.splitlines()
    assert lines[0] == "[api]"  # ready to paste into a config
    assert re.fullmatch(r'base_url = "http://127\.0\.0\.1:\d+/v1"', lines[1])
    assert lines[2:4] == ['vendor_api_key = "vk"', 'practice_api_key = "pk"']
    assert lines[4].startswith("# the sandbox's S3 is http://127.0.0.1:")
