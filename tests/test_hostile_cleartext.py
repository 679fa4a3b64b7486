"""Plain http:// only where api.base_url itself is loopback http:// (the sandbox): an
https PracSuite that answers a presign with `http://127.0.0.1:<port>/upload` gets no
file sent in clear (issue 27, point 5)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from hostile import accepting_s3, run_against
from pracsuite_ingest.guards import cleartext_problem
from pracsuite_ingest.verification import Verifier, VerifyFailed
from test_hostile_answers import GOOD_FIELDS, serve

pytestmark = pytest.mark.timeout(120)


@asynccontextmanager
async def https_api(ca: trustme.CA, upload_url: str) -> AsyncIterator[str]:
    """PracSuite on https://127.0.0.1:<port>, presigning uploads to `upload_url`."""
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.json_response({"patient_attachments": [], "total_entries": 0,
                                      "links": {}})
        name = (await request.json())["file_name"]
        return web.json_response({"url": upload_url,
                                  "fields": {**GOOD_FIELDS, "key": f"temp/1/1/1/1/u/{name}"}})

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


async def test_an_https_api_cannot_send_a_file_to_loopback_http(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "a.pdf").write_bytes(b"%PDF a patient's letter")
    (tmp_path / "m.csv").write_text("client_id,path\n1,a.pdf\n")
    async with serve(accepting_s3) as (s3_url, posted), https_api(ca, f"{s3_url}/upload") as base:
        result = await run_against(tmp_path, base,
                                   api_extra=f'ca_file = "{tmp_path / "ca.pem"}"\n')
    assert result.code == 1, result.stderr[-3000:]
    [item] = result.report(tmp_path / "r")["items"]
    assert item["status"] == "failed" and "plain http://" in item["error"], item
    assert "api.base_url" in item["error"]
    assert posted == []  # nothing reached the loopback listener
    assert "/upload" not in item["error"]  # the presigned URL's path is not shown


def test_the_rule() -> None:
    sandbox, remote = "http://127.0.0.1:8700/v1", "https://api.pracsuite.com/v1"
    for what in ("http://127.0.0.1:9000/b", "http://localhost/b", "http://[::1]:9/b"):
        assert cleartext_problem(what, "the upload", sandbox) is None
        problem = cleartext_problem(what, "the upload", remote)
        assert problem is not None and "api.base_url" in problem
    assert cleartext_problem("https://s3.example/b", "the upload", remote) is None
    assert cleartext_problem("http://s3.example/b", "the upload", sandbox) is not None
    assert cleartext_problem(sandbox, "the URL") is None  # base_url itself, as before


async def test_a_verification_download_over_loopback_http_is_refused_for_a_remote_api(
        ) -> None:
    async def storage(_: web.Request) -> web.StreamResponse:
        return web.Response(body=b"bytes")

    async with serve(storage) as (url, seen), aiohttp.ClientSession() as session:
        remote = Verifier(session, 1, base_url="https://api.pracsuite.com/v1")
        with pytest.raises(VerifyFailed, match="plain http://"):
            await remote.digest(f"{url}/o", 100)
        assert seen == []
        sandbox = Verifier(session, 1, base_url="http://127.0.0.1:8700/v1")
        assert (await sandbox.digest(f"{url}/o", 100)).size == 5
