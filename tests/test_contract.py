"""The sandbox answers to pracsuite-openapi.yaml, and serves nothing else.

Each documented operation is driven over real sockets in every list variant; every
answer (successes, errors, throttles, redirects) must be one the contract documents.
A path PracSuite does not document is answered as its API Gateway does.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest

from contract import answer_problems, request_problems
from e2e import api_keys
from pracsuite_ingest.api import PracSuiteClient, RecordRef, classify_api_answer
from pracsuite_ingest.errors import CredentialsRefused
from pracsuite_ingest.logs import scrub
from pracsuite_ingest.rate_gate import RateGate
from pracsuite_ingest.sandbox import FaultPlan, Sandbox, SandboxOptions, ThrottleStyle


async def _get(session: aiohttp.ClientSession, url: str, sb: Sandbox) -> tuple[int, Any]:
    async with session.get(url, headers=api_keys(sb), allow_redirects=False) as response:
        body = await response.json(content_type=None) if response.status != 307 else None
        return response.status, body


async def _drive_every_operation(session: aiohttp.ClientSession, sb: Sandbox) -> None:
    """Every documented operation once, plus its common errors."""
    base, keys = sb.base_url, api_keys(sb)
    async with session.post(f"{base}/patient/1/patient_attachment", headers=keys,
                            json={"file_name": "a.pdf"}) as response:
        assert response.status == 200
    for query in ("", "?page=1&page_size=2", "?page=2&page_size=2",
                  "?sort_by=" + quote('["file_date","file_size"]'), "?page_size=101"):
        await _get(session, f"{base}/patient/1/patient_attachment{query}", sb)
    await _get(session, f"{base}/patient/99/patient_attachment", sb)
    await _get(session, f"{base}/patient/1/patient_attachment_folder", sb)
    for path in ("1001", "1001/presign_url", "1001/content", "999999", "999999/presign_url"):
        await _get(session, f"{base}/patient_attachment/{path}", sb)
    async with session.get(f"{base}/patient/1/patient_attachment") as response:
        assert response.status == 403  # no keys


@pytest.mark.parametrize(("list_key", "links"), [
    ("patient_attachments", True), ("bare", True), ("items", False), ("data", True)])
async def test_every_answer_is_one_the_contract_documents(
        session: aiohttp.ClientSession, list_key: str, links: bool) -> None:
    options = SandboxOptions(clients=("1", "2"), existing_records_per_client=5,
                             list_key=list_key, record_links=links)
    async with Sandbox(options) as sb:
        await _drive_every_operation(session, sb)
        exchanges = list(sb.api_requests)
    assert len(exchanges) == 14
    assert answer_problems(exchanges) == []
    # the test's own requests are documented too, except the two that break it on purpose
    assert [p.split(":")[0] for p in request_problems(exchanges, worker_only=False)] == [
        "GET /v1/patient/1/patient_attachment?page_size=101 -> 400",  # above the maximum
        "GET /v1/patient/1/patient_attachment -> 403"]  # no keys


@pytest.mark.parametrize("style", list(ThrottleStyle))
async def test_throttled_and_failed_answers_are_documented(
        session: aiohttp.ClientSession, style: ThrottleStyle) -> None:
    options = SandboxOptions(clients=("1",), existing_records_per_client=1, seed=3)
    async with Sandbox(options) as sb:
        sb.set_faults(FaultPlan(fail_rate_429=0.5, fail_rate_500=0.5, throttle_style=style))
        for _ in range(8):
            await _get(session, f"{sb.base_url}/patient/1/patient_attachment", sb)
        exchanges = list(sb.api_requests)
    assert {ex.status for ex in exchanges} <= {200, 429, 500}
    assert 429 in {ex.status for ex in exchanges}
    assert answer_problems(exchanges) == []


@pytest.mark.parametrize("path", [
    "/patient/1/patient_attachment/1001/presign_url",  # the worker's old, undocumented path
    "/patient/1/patient_attachment/1001",
    "/patient_attachments",
    "/patient_attachment/1001/download",
])
async def test_an_undocumented_path_is_403_missing_authentication_token_like_api_gateway(
        session: aiohttp.ClientSession, path: str) -> None:
    async with Sandbox(SandboxOptions(clients=("1",), existing_records_per_client=1)) as sb:
        status, body = await _get(session, f"{sb.base_url}{path}", sb)
        recorded = sb.api_requests[-1]
    assert status == 403
    assert body["error"]["code"] == "MISSING_AUTHENTICATION_TOKEN"
    assert body["error"]["status"] == 403 and body["request_id"]
    assert request_problems([recorded], worker_only=False)  # and the contract agrees


async def test_records_carry_absolute_links_on_the_api_origin_that_answer(
        session: aiohttp.ClientSession) -> None:
    async with Sandbox(SandboxOptions(clients=("1",), existing_records_per_client=2)) as sb:
        _, page = await _get(session, f"{sb.base_url}/patient/1/patient_attachment", sb)
        record = page["patient_attachments"][0]
        api_origin = urlsplit(sb.base_url)[:2]
        for name in ("self", "presign_url", "content"):
            assert urlsplit(record["links"][name])[:2] == api_origin
        status, answer = await _get(session, record["links"]["presign_url"], sb)
        assert status == 200 and answer["file_name"] and answer["url"]
        status, same = await _get(session, record["links"]["self"], sb)
        assert status == 200 and same["attachment_client_id"] == record["attachment_client_id"]
        assert record["links"]["self"] == (
            f"{sb.base_url}/patient_attachment/{record['attachment_client_id']}")


async def test_sort_by_sorts_and_keeps_to_its_documented_form(
        session: aiohttp.ClientSession) -> None:
    async with Sandbox(SandboxOptions(clients=("1",), existing_records_per_client=6)) as sb:
        url = f"{sb.base_url}/patient/1/patient_attachment?page_size=2&sort_by="
        status, body = await _get(session, url + quote(json.dumps(["file_size"])), sb)
        assert status == 200
        sizes = [r["file_size"] for r in body["patient_attachments"]]
        assert sizes == sorted(sizes)
        assert "sort_by" in body["links"]["next"]  # the next page keeps the order
        status, body = await _get(session, url + quote('["no_such_field"]'), sb)
        assert (status, body["error"]["code"]) == (400, "INVALID_PARAMS")


def test_a_403_after_accepted_calls_names_the_path_and_both_causes() -> None:
    body = json.dumps({"error": {"status": 403, "code": "MISSING_AUTHENTICATION_TOKEN",
                                 "detail": "Missing Authentication Token"},
                       "request_id": "r-1"}).encode()
    error = classify_api_answer(403, body, {}, 0.0, method="GET",
                                path="/v1/patient/1/patient_attachment/1001/presign_url",
                                accepted_before=True)
    assert isinstance(error, CredentialsRefused)
    text = str(error)
    assert "GET /v1/patient/1/patient_attachment/1001/presign_url" in text
    assert "revoked the practice key meanwhile" in text
    assert "PracSuite has no such path" in text
    assert "request_id r-1" in text
    assert scrub(text) == text  # nothing in it looks like a secret to the log scrubber
    first = str(classify_api_answer(403, body, {}, 0.0, method="GET", path="/v1/x"))
    assert "GET /v1/x" in first and "meanwhile" not in first


async def test_a_records_presign_link_is_followed_on_the_api_origin_only(
        session: aiohttp.ClientSession) -> None:
    base = "https://api.pracsuite.com/v1"
    api = PracSuiteClient(session, base, "v", "p", RateGate(1.0), timeout_s=5)
    own = f"{base}/patient_attachment/9/presign_url?sig=1"
    assert api.presign_url_of(RecordRef("9", own)) == own
    assert api.presign_url_of(RecordRef("9", "/v1/patient_attachment/9/presign_url")) == (
        f"{base}/patient_attachment/9/presign_url")
    documented = f"{base}/patient_attachment/9/presign_url"
    for elsewhere in ("https://evil.example/v1/patient_attachment/9/presign_url",
                      "http://api.pracsuite.com/v1/patient_attachment/9/presign_url",
                      "https://api.pracsuite.com:8443/x", ""):
        assert api.presign_url_of(RecordRef("9", elsewhere)) == documented
    assert api.presign_url_of(RecordRef("a/b")) == f"{base}/patient_attachment/a%2Fb/presign_url"
