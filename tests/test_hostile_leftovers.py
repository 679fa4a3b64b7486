"""Issue 27, point 6: a namespaced S3 error, a JSON line naming a key twice, hard links
inside input.root, and the texts that said the wrong thing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from e2e import run_cli
from hostile import run_against
from pracsuite_ingest.errors import Retryable
from pracsuite_ingest.scan import read_rows
from test_hostile_answers import client, presign_body, serve
from test_hostile_trees import _deny, write

pytestmark = pytest.mark.timeout(120)
NAMESPACED_EXPIRED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Code>AccessDenied</Code>'
    b"<Message>Invalid according to Policy: Policy expired.</Message>"
    b"<RequestId>4442587FB7D0A2F9</RequestId></Error>")


async def test_a_namespaced_policy_expired_is_presigned_again(tmp_path: Path) -> None:
    """S3 (or what stands before it) answers the first POST with a namespaced
    "Policy expired": the file is presigned again and sent, not failed."""
    posts: list[int] = []

    async def s3(request: web.Request) -> web.StreamResponse:
        await request.read()
        posts.append(1)
        if len(posts) == 1:
            return web.Response(body=NAMESPACED_EXPIRED, status=403,
                                content_type="application/xml")
        return web.Response(status=204)

    async with serve(s3) as (s3_url, _):
        async def api(request: web.Request) -> web.StreamResponse:
            if request.method == "GET":
                return web.json_response({"patient_attachments": [], "total_entries": 0,
                                          "links": {}})
            return web.Response(text=presign_body(url=f"{s3_url}/b",
                                                  key="temp/1/1/1/1/u/a.pdf"),
                                content_type="application/json")

        async with serve(api) as (base, seen):
            (tmp_path / "a.pdf").write_bytes(b"%PDF a letter")
            (tmp_path / "m.csv").write_text("client_id,path\n1,a.pdf\n")
            result = await run_against(tmp_path, f"{base}/v1")
            presigns = sum(1 for r in seen if r.method == "POST")
    [item] = result.report(tmp_path / "r")["items"]
    assert item["status"] == "missing", item  # uploaded; this API never makes a record
    assert presigns == 2 and len(posts) == 2


def test_an_s3_error_declaring_entities_is_not_parsed() -> None:
    from pracsuite_ingest.s3_errors import parse_s3_error

    levels = b"".join(b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10)
                      for i in range(1, 10))
    bomb = (b'<?xml version="1.0"?><!DOCTYPE Error [<!ENTITY l0 "lol">' + levels
            + b"]><Error><Code>&l9;</Code><Message>x</Message></Error>")
    assert parse_s3_error(bomb) == ("", "")
    external = (b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b"<Error><Code>&x;</Code></Error>")
    assert parse_s3_error(external) == ("", "")
    assert parse_s3_error(NAMESPACED_EXPIRED) == (
        "AccessDenied", "Invalid according to Policy: Policy expired.")


def test_a_json_line_naming_a_key_twice_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"client_id": "1", "path": "a.pdf", "client_id": "2"}\n'
                        '{"client_id": "3", "path": "b.pdf"}\n')
    first, second = read_rows(manifest, None)
    assert first.problem is not None and "'client_id' appears twice" in first.problem
    assert first.client_id == "" and second.problem is None and second.client_id == "3"


async def test_a_hard_link_inside_input_root_is_warned_and_sent(tmp_path: Path) -> None:
    """Warned, not refused (see local_check.HARD_LINK_NOTE for why); no file name in the line."""
    root = tmp_path / "in"
    write(root / "1" / "linked-name.pdf", b"%PDF outside")
    os.link(root / "1" / "linked-name.pdf", tmp_path / "outside.pdf")
    write(root / "2" / "single.pdf", b"%PDF alone")
    result = await run_cli("run", "--dry-run", "--source-dir", str(root), "--state",
                           str(tmp_path / "s.db"), "--report-dir", str(tmp_path / "r"),
                           "--log-format", "json", cwd=tmp_path,
                           env={"PRACSUITE_INGEST_INPUT__ROOT": str(root)})
    assert result.code == 0, result.stderr[-2000:]
    warnings = [json.loads(line) for line in result.stderr.splitlines()
                if "other hard links" in line]
    assert [(w["client_id"], w["links"]) for w in warnings] == [("1", 2)]
    assert "linked-name" not in json.dumps(warnings)


def test_an_unreadable_client_folder_keeps_its_client_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    write(src / "7" / "a.pdf")
    _deny(monkeypatch, src / "7")
    try:
        [row] = list(read_rows(None, src))
    finally:
        (src / "7").chmod(0o700)
    assert row.client_id == "7" and row.problem is not None and "not readable" in row.problem


async def test_a_body_that_cannot_be_decoded_is_not_called_unreachable() -> None:
    async def broken(_: web.Request) -> web.StreamResponse:
        return web.Response(body=b"\x1f\x8b\x08\x00not gzip at all" * 100,
                            headers={"Content-Encoding": "gzip",
                                     "Content-Type": "application/json"})

    async with serve(broken) as (base, _), aiohttp.ClientSession() as session:
        with pytest.raises(Retryable) as caught:
            await client(session, base).presign("1", "a.pdf")
    assert "unreachable" not in str(caught.value)
    assert "could not be read" in str(caught.value)
