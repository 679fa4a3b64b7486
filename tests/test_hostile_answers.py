"""Untrusted answers: a loopback server that answers badly. Each bad answer fails its
item with a clear error (never the run, never a hang), and the keys go nowhere but
`api.base_url`: not to another host's `links.next`, not to S3."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from e2e import run_cli
from pracsuite_ingest.api import PracSuiteClient
from pracsuite_ingest.connection import make_client, make_session
from pracsuite_ingest.errors import Permanent, Retryable
from pracsuite_ingest.guards import LIST_BODY_LIMIT, SMALL_BODY_LIMIT
from pracsuite_ingest.rate_gate import RateGate
from pracsuite_ingest.settings import load_settings
from pracsuite_ingest.upload import upload_file

pytestmark = pytest.mark.timeout(60)  # "never hang": a hang fails here

VENDOR, PRACTICE = "vendor-key-0123456789", "practice-key-9876543210"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GOOD_FIELDS = {"key": "temp/1/1/1/1/0a1b/a.pdf", "Policy": "eyJleHBpcmF0aW9uIjoiMjA5OSJ9",
               "x-amz-signature": "ab" * 32}


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[tuple[str, list[web.Request]]]:
    """`handler` on 127.0.0.1 (any path, any method); yields its root URL and the requests."""
    seen: list[web.Request] = []

    async def recording(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recording)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


def client(session: aiohttp.ClientSession, base: str, timeout_s: float = 5.0) -> PracSuiteClient:
    return PracSuiteClient(session, f"{base}/v1", VENDOR, PRACTICE, RateGate(1000.0),
                           timeout_s=timeout_s, page_size=2)


def answer(body: bytes | str, status: int = 200,
           content_type: str = "application/json") -> Handler:
    async def handler(_: web.Request) -> web.StreamResponse:
        data = body.encode() if isinstance(body, str) else body
        return web.Response(body=data, status=status, content_type=content_type)
    return handler


async def endless(request: web.Request) -> web.StreamResponse:
    """A body with no Content-Length that never ends."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    with_chunk = b"[" + b"0," * 32_768
    while True:
        await resp.write(with_chunk)
        await asyncio.sleep(0)


async def drip(request: web.Request) -> web.StreamResponse:
    """Headers at once, then a byte every half second, forever."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    while True:
        await resp.write(b" ")
        await asyncio.sleep(0.5)


def presign_body(url: str = "https://s3.example/bucket", **fields: Any) -> str:
    return json.dumps({"url": url, "fields": {**GOOD_FIELDS, **fields}})


@pytest.mark.parametrize(("handler", "error", "words"), [
    (answer("<html><body>Sign in to the proxy</body></html>", content_type="text/html"),
     Retryable, "not JSON (text/html"),
    (answer('{"url": "https://s3.example/b", "fields": {"key": "te'), Retryable, "not JSON"),
    (answer("[" * 60_000), Retryable, "not JSON"),  # nesting: RecursionError, not a crash
    (answer("[]"), Retryable, "has no 'fields'"),
    (answer('{"url": 7, "fields": {"key": "k"}}'), Retryable, "has no 'url'"),
    (answer(presign_body(Policy=12)), Retryable, "field 'Policy' is int, not text"),
    (answer(presign_body(key="")), Retryable, "no 'key' field"),
    (answer(presign_body(url="http://s3.example/bucket")), Permanent, "plain http://"),
    (answer(presign_body(url="ftp://s3.example/bucket")), Permanent, "not an http(s) URL"),
    (answer(" " * (SMALL_BODY_LIMIT + 1)), Permanent, "too large"),
    (endless, Permanent, "too large"),
    (answer("<html>" + "x" * 2_000_000, status=502, content_type="text/html"),
     Retryable, "PracSuite 502"),
])
async def test_a_bad_presign_answer_is_a_clear_error_for_that_item(
        handler: Handler, error: type[Exception], words: str) -> None:
    async with serve(handler) as (base, _), aiohttp.ClientSession() as session:
        with pytest.raises(error) as caught:
            await client(session, base).presign("1", "a.pdf")
    assert words in str(caught.value)
    assert type(caught.value) is error


async def test_http_to_a_loopback_s3_is_allowed() -> None:
    async with serve(answer(presign_body(url="http://127.0.0.1:9/bucket"))) as (base, _), \
            aiohttp.ClientSession() as session:
        presigned = await client(session, base).presign("1", "a.pdf")
    assert presigned.url == "http://127.0.0.1:9/bucket" and presigned.key.endswith("a.pdf")


@pytest.mark.parametrize("handler", [pytest.param(drip, id="body-drips"),
                                     pytest.param(answer("{}"), id="no-answer")])
async def test_a_stalled_answer_times_out_instead_of_hanging(handler: Handler) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        if handler is not drip:
            await asyncio.sleep(30)
        return await handler(request)

    async with serve(slow) as (base, _), aiohttp.ClientSession() as session:
        with pytest.raises(Retryable, match="unreachable"):
            await client(session, base, timeout_s=0.5).presign("1", "a.pdf")


async def test_links_next_to_another_host_is_refused_and_gets_no_keys() -> None:
    async with serve(answer("{}")) as (elsewhere, elsewhere_seen):
        page = {"patient_attachments": [{"id": 1}, {"id": 2}],
                "links": {"next": f"{elsewhere}/v1/patient/1/patient_attachment?page=2"}}
        async with serve(answer(json.dumps(page))) as (base, seen), \
                aiohttp.ClientSession() as session:
            api = client(session, base)
            pages = api.list_pages("1")
            assert len(await anext(pages)) == 2
            with pytest.raises(Permanent, match="refusing to send the API keys to "
                                                r"http://127\.0\.0\.1:\d+: it is not"):
                await anext(pages)
    assert len(seen) == 1 and elsewhere_seen == []
    assert seen[0].headers["x-api-key"] == VENDOR  # sanity: the API itself gets them


@pytest.mark.parametrize("nxt", ["https://127.0.0.1:{port}/v1/p?page=2",  # other scheme
                                 "http://localhost:{port}/v1/p?page=2",  # other host name
                                 "//evil.example/v1/p?page=2",  # scheme-relative
                                 "javascript:alert(1)"])
async def test_any_other_origin_in_links_next_is_refused(nxt: str) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        port = request.url.port
        return web.json_response({"items": [{"id": 1}, {"id": 2}],
                                  "links": {"next": nxt.format(port=port)}})

    async with serve(handler) as (base, seen), aiohttp.ClientSession() as session:
        pages = client(session, base).list_pages("1")
        await anext(pages)
        with pytest.raises(Permanent, match="refusing to send the API keys"):
            await anext(pages)
    assert len(seen) == 1


async def test_a_relative_links_next_stays_on_the_api_host() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("page") == "2":
            return web.json_response({"items": [{"id": 3}], "links": {}})
        return web.json_response({"items": [{"id": 1}, {"id": 2}],
                                  "links": {"next": "/v1/patient/1/patient_attachment?page=2"}})

    async with serve(handler) as (base, seen), aiohttp.ClientSession() as session:
        pages = [p async for p in client(session, base).list_pages("1")]
    assert [len(p) for p in pages] == [2, 1] and len(seen) == 2


async def test_an_enormous_list_page_is_not_read_whole() -> None:
    async with serve(answer(" " * (LIST_BODY_LIMIT + 1))) as (base, _), \
            aiohttp.ClientSession() as session:
        with pytest.raises(Permanent, match="too large"):
            await anext(client(session, base).list_pages("1"))


async def test_hostile_records_in_a_list_do_not_crash_matching() -> None:
    from pracsuite_ingest.reconcile import records as rc

    records = [{"id": 1, "file_size": 1e999}, {"id": {"x": 1}, "file_size": "9" * 5000},
               {"attachment_client_id": None}, "not an object", [1, 2]]
    async with serve(answer(json.dumps({"items": records}))) as (base, _), \
            aiohttp.ClientSession() as session:
        records = [r async for page in client(session, base).list_pages("1") for r in page]
    views = [v for v in map(rc.view, records) if v is not None]
    assert [(v.record_id, v.file_size) for v in views] == [("1", None), ("{'x': 1}", None)]


async def test_the_s3_post_never_carries_the_keys(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    got: dict[str, Any] = {}

    async def s3(request: web.Request) -> web.StreamResponse:
        got["headers"] = dict(request.headers)
        got["body"] = await request.read()
        return web.Response(status=204)

    for k in [k for k in os.environ if k.startswith("PRACSUITE")]:
        monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "a.pdf"
    file.write_bytes(b"%PDF-1.4 patient letter")
    async with serve(s3) as (s3_url, _):  # noqa: SIM117 - the API needs the S3's URL
        async with serve(answer(presign_body(url=f"{s3_url}/bucket"))) as (base, api_seen):
            settings = load_settings(None, {"api": {"base_url": f"{base}/v1",
                                                    "vendor_api_key": VENDOR,
                                                    "practice_api_key": PRACTICE}},
                                     require_input=False)
            # the session the worker uses: no default header may carry a key to S3
            async with make_session(settings) as session:
                presigned = await make_client(settings, session).presign("1", "a.pdf")
                await upload_file(session, presigned, file, "a.pdf")
    assert api_seen[0].headers["a-api-key"] == PRACTICE  # the API got them
    sent = json.dumps(got["headers"]).encode() + got["body"]
    assert b"%PDF-1.4 patient letter" in got["body"]
    for secret in (VENDOR, PRACTICE):
        assert secret.encode() not in sent
    assert not {"x-api-key", "a-api-key"} & {h.lower() for h in got["headers"]}


async def test_a_run_against_a_badly_answering_api_fails_items_not_the_run(
        tmp_path: Path) -> None:
    """The CLI, end to end: each client's presign answers differently; the run ends with
    a report naming each failure, exit 1 (not 3), and no traceback."""
    async def s3(_: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async with serve(s3) as (s3_url, _):
        bad = {
            "2": ("<html>login</html>", "text/html"),
            "3": (presign_body(url="http://203.0.113.9/bucket"), "application/json"),
            "4": ("[" * 40_000, "application/json"),
            "5": (" " * (SMALL_BODY_LIMIT + 10), "application/json"),
        }

        async def api(request: web.Request) -> web.StreamResponse:
            client_id = request.path.split("/")[3]
            if request.method == "GET":  # the list: empty, one page
                return web.json_response({"patient_attachments": [], "total_entries": 0,
                                          "links": {}})
            good = presign_body(url=f"{s3_url}/b", key=f"temp/1/{client_id}/1/1/u/{client_id}.pdf")
            body, ctype = bad.get(client_id, (good, "application/json"))
            return web.Response(text=body, content_type=ctype)

        async with serve(api) as (base, _):
            rows = ["client_id,path"]
            for client_id in ("1", "2", "3", "4", "5"):
                (tmp_path / f"{client_id}.pdf").write_bytes(b"x" * 10)
                rows.append(f"{client_id},{client_id}.pdf")
            (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
            cfg = tmp_path / "c.toml"
            cfg.write_text(f'[api]\nbase_url = "{base}/v1"\nvendor_api_key = "{VENDOR}"\n'
                           f'practice_api_key = "{PRACTICE}"\nmax_attempts = 2\n'
                           'timeout_s = 5.0\n[reconcile]\ndeadline_s = 0.5\n'
                           'poll_interval_s = 0.2\n[log]\nformat = "json"\n')
            result = await run_cli("run", "--config", str(cfg), "--manifest",
                                   str(tmp_path / "m.csv"), "--state", str(tmp_path / "s.db"),
                                   "--report-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert result.code == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    items = {it["client_id"]: it for it in result.report(tmp_path / "r")["items"]}
    assert items["1"]["status"] == "missing"  # uploaded; this API never makes a record
    assert "not JSON (text/html" in items["2"]["error"]
    assert "plain http://" in items["3"]["error"]
    assert "not JSON" in items["4"]["error"]
    assert "too large" in items["5"]["error"]
    assert {items[c]["status"] for c in "2345"} == {"failed"}
