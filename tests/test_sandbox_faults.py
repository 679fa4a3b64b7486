"""Each sandbox fault knob, observed from a real client."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest

from e2e import api_keys as _keys
from pracsuite_ingest.sandbox import FaultPlan, Sandbox, SandboxOptions, ThrottleStyle
from pracsuite_ingest.sandbox.faults import Faults

BASE: dict[str, Any] = {
    "clients": ("1",),
    "existing_records_per_client": 1,
    "validation_delay_s": 0.02,
    "seed": 7,
}


async def _list(sb: Sandbox, session: aiohttp.ClientSession) -> tuple[int, Any, Any]:
    url = f"{sb.base_url}/patient/1/patient_attachment"
    async with session.get(url, headers=_keys(sb)) as response:
        return response.status, await response.json(content_type=None), response.headers


async def _presign(sb: Sandbox, session: aiohttp.ClientSession) -> tuple[str, dict[str, str]]:
    url = f"{sb.base_url}/patient/1/patient_attachment"
    async with session.post(url, json={"file_name": "a.pdf"}, headers=_keys(sb)) as response:
        assert response.status == 200
        body = await response.json()
    return body["url"], body["fields"]


def _form(fields: dict[str, str]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", b"%PDF-1.7", filename="a.pdf")
    return form


async def test_retry_after_seconds(session: aiohttp.ClientSession) -> None:
    options = SandboxOptions(**BASE, fail_rate_429=1.0, retry_after_s=3)
    async with Sandbox(options) as sb:
        status, body, headers = await _list(sb, session)
    assert status == 429
    assert headers["Retry-After"] == "3"
    assert body["error"]["status"] == 429
    assert body["request_id"] == headers["x-request-id"]


async def test_retry_after_http_date(session: aiohttp.ClientSession) -> None:
    options = SandboxOptions(
        **BASE, fail_rate_429=1.0, throttle_style=ThrottleStyle.RETRY_AFTER_DATE
    )
    async with Sandbox(options) as sb:
        status, _, headers = await _list(sb, session)
    assert status == 429
    assert parsedate_to_datetime(headers["Retry-After"]) > datetime.now(UTC)


async def test_ratelimit_reset(session: aiohttp.ClientSession) -> None:
    options = SandboxOptions(
        **BASE, fail_rate_429=1.0, throttle_style=ThrottleStyle.RATELIMIT_RESET
    )
    async with Sandbox(options) as sb:
        status, _, headers = await _list(sb, session)
    assert status == 429
    assert int(headers["X-RateLimit-Reset"]) > time.time()
    assert "Retry-After" not in headers


async def test_gateway_throttle_is_a_bare_message_without_hints(
    session: aiohttp.ClientSession,
) -> None:
    options = SandboxOptions(**BASE, fail_rate_429=1.0, throttle_style=ThrottleStyle.GATEWAY)
    async with Sandbox(options) as sb:
        status, body, headers = await _list(sb, session)
        assert sb.stats()["faults"] == {"api_429": 1}
    assert (status, body) == (429, {"message": "Too Many Requests"})
    assert "Retry-After" not in headers
    assert "X-RateLimit-Reset" not in headers


async def test_faults_spare_bad_keys_and_the_admin_endpoints(
    session: aiohttp.ClientSession,
) -> None:
    async with Sandbox(SandboxOptions(**BASE, fail_rate_429=1.0, fail_rate_500=1.0)) as sb:
        url = f"{sb.base_url}/patient/1/patient_attachment"
        async with session.get(url) as response:
            assert response.status == 403
        async with session.get(f"{sb.admin_url}/stats") as response:
            assert response.status == 200
        async with session.post(f"{sb.admin_url}/reset-faults") as response:
            assert response.status == 200
        status, _, _ = await _list(sb, session)
        assert status == 200


async def test_usage_counts_each_practice_keys_granted_and_throttled_calls_per_second(
    session: aiohttp.ClientSession,
) -> None:
    # two practices on one vendor key whose budget holds 2 calls: practice 1 takes both,
    # its third call and practice 2's calls are refused; a wrong practice key counts
    # nowhere; the keys themselves never appear, only their positions
    keys = ("practice-one-" + "a" * 20, "practice-two-" + "b" * 20)
    options = SandboxOptions(**BASE, rate_budget=2.0, throttle_style=ThrottleStyle.GATEWAY,
                             practice_keys=keys)
    async with Sandbox(options) as sb:
        url = f"{sb.base_url}/patient/1/patient_attachment"
        statuses = []
        for key in (keys[0], keys[0], keys[0], keys[1], keys[1], "not-a-practice-key"):
            headers = {"x-api-key": sb.vendor_key, "a-api-key": key}
            async with session.get(url, headers=headers) as response:
                statuses.append(response.status)
        async with session.get(f"{sb.admin_url}/stats") as response:
            text = await response.text()
        usage = sb.stats()["usage"]
    assert statuses == [200, 200, 429, 429, 429, 401]
    assert usage["rate_budget"] == 2.0
    by_key = usage["practice_keys"]
    assert set(by_key) == {"1", "2"}
    assert (by_key["1"]["granted"], by_key["1"]["throttled"]) == (2, 1)
    assert (by_key["2"]["granted"], by_key["2"]["throttled"]) == (0, 2)
    for one in by_key.values():  # the timeline adds up to the totals
        assert sum(one["granted_per_s"]) == one["granted"]
        assert sum(one["throttled_per_s"]) == one["throttled"]
        assert len(one["granted_per_s"]) == len(one["throttled_per_s"]) >= 1
    assert '"practice_keys"' in text and not any(k in text for k in keys)


async def test_fail_500_is_server_error_with_request_id(session: aiohttp.ClientSession) -> None:
    async with Sandbox(SandboxOptions(**BASE, fail_rate_500=1.0)) as sb:
        status, body, headers = await _list(sb, session)
    assert status == 500
    assert body["error"]["code"] == "SERVER_ERROR"
    assert body["request_id"] == headers["x-request-id"]


async def test_s3_slowdown_is_503_and_stores_nothing(session: aiohttp.ClientSession) -> None:
    async with Sandbox(SandboxOptions(**BASE, s3_slowdown_rate=1.0)) as sb:
        url, fields = await _presign(sb, session)
        async with session.post(url, data=_form(fields)) as response:
            assert response.status == 503
            assert "<Code>SlowDown</Code>" in await response.text()
        assert not (sb.data_dir / sb.bucket / fields["key"]).exists()


async def test_s3_drop_before_disconnects_and_stores_nothing(
    session: aiohttp.ClientSession,
) -> None:
    async with Sandbox(SandboxOptions(**BASE, s3_drop_before_rate=1.0)) as sb:
        url, fields = await _presign(sb, session)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.post(url, data=_form(fields)) as response:
                await response.read()
        assert not (sb.data_dir / sb.bucket / fields["key"]).exists()
        assert sb.stats()["requests"]["s3_post"] == {"dropped": 1}


async def test_s3_drop_after_stores_the_object_yet_the_client_sees_a_disconnect(
    session: aiohttp.ClientSession,
) -> None:
    async with Sandbox(SandboxOptions(**BASE, s3_drop_after_rate=1.0)) as sb:
        url, fields = await _presign(sb, session)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.post(url, data=_form(fields)) as response:
                await response.read()
        assert (sb.data_dir / sb.bucket / fields["key"]).read_bytes() == b"%PDF-1.7"
        await _wait_for_record(sb)
        assert sb.stats()["records_created_total"] == 1


async def _wait_for_record(sb: Sandbox) -> None:
    for _ in range(100):
        if sb.stats()["records_created_total"]:
            return
        await asyncio.sleep(0.01)


async def test_latency_holds_every_api_and_s3_request(session: aiohttp.ClientSession) -> None:
    async with Sandbox(SandboxOptions(**BASE, latency_ms=(60, 60))) as sb:
        started = time.monotonic()
        url, fields = await _presign(sb, session)
        presigned = time.monotonic()
        async with session.post(url, data=_form(fields)) as response:
            assert response.status == 204
        uploaded = time.monotonic()
    assert presigned - started >= 0.055
    assert uploaded - presigned >= 0.055


def test_fault_draws_are_reproducible_for_a_seed() -> None:
    plan = FaultPlan(fail_rate_429=0.3, fail_rate_500=0.3, s3_drop_after_rate=0.5)

    def draws(seed: int) -> list[object]:
        faults = Faults(plan, seed=seed)
        return [faults.api_fault() for _ in range(50)] + [faults.s3_fault() for _ in range(50)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    assert {d for d in draws(1) if d is not None} == {"api_429", "api_500", "s3_drop_after"}


def test_s3_fault_draws_do_not_depend_on_how_api_calls_interleave_with_uploads() -> None:
    # Reconcile runs alongside the uploads: how many API calls come between two S3 POSTs
    # varies from run to run, and must not change which S3 POSTs a seed faults.
    plan = FaultPlan(fail_rate_429=0.3, fail_rate_500=0.3, s3_slowdown_rate=0.2,
                     s3_drop_before_rate=0.2, s3_drop_after_rate=0.2, latency_ms=(1, 9))

    def s3_draws(api_calls_between: int) -> list[object]:
        faults = Faults(plan, seed=7)
        out: list[object] = []
        for _ in range(40):
            for _ in range(api_calls_between):
                faults.api_fault()
                faults.latency_s()
            out.append(faults.s3_fault())
        return out

    assert s3_draws(0) == s3_draws(1) == s3_draws(5)


def test_out_of_range_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="fail_rate_429"):
        FaultPlan(fail_rate_429=1.5)
