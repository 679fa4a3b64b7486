"""Client ids are URL path segments: `..`, `.` and whatever a URL library or a server
would turn into another path are `invalid` rows, never sent (issue 27, point 3)."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from e2e import run_cli
from hostile import accepting_s3, run_against
from pracsuite_ingest.errors import Permanent
from test_hostile_answers import client, presign_body, serve

pytestmark = pytest.mark.timeout(120)
DOCUMENTED = re.compile(r"^/v1/patient/[^/]+/patient_attachment$")
HOSTILE_IDS = ["..", ".", "%2e%2e", "%2E", "a/b", "a\\b", "7\x01", "%2f"]


def gateway(s3_url: str):  # type: ignore[no-untyped-def]
    """PracSuite as API Gateway answers it: a path it does not have is a 403
    MISSING_AUTHENTICATION_TOKEN, which the worker must read as refused keys."""
    async def api(request: web.Request) -> web.StreamResponse:
        if not DOCUMENTED.match(request.path):
            return web.json_response({"message": "Missing Authentication Token"}, status=403)
        client_id = request.path.split("/")[3]
        if request.method == "GET":
            return web.json_response({"patient_attachments": [], "total_entries": 0,
                                      "links": {}})
        name = (await request.json())["file_name"]
        return web.Response(text=presign_body(
            url=f"{s3_url}/b", key=f"temp/1/{client_id}/1/1/u/{name}"),
            content_type="application/json")
    return api


async def test_dot_segments_and_separators_in_a_manifest_are_invalid_rows(
        tmp_path: Path) -> None:
    """On the old code the `..` row reached `GET /v1/patient_attachment` with both keys,
    and its 403 stopped the whole run (exit 3, blaming the practice key)."""
    (tmp_path / "doc.pdf").write_bytes(b"%PDF a letter")
    lines = ["client_id,path,file_name", "5,doc.pdf,ok.pdf"]
    lines += [f'"{cid}",doc.pdf,x{n}.pdf' for n, cid in enumerate(HOSTILE_IDS)]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    async with serve(accepting_s3) as (s3_url, _), serve(gateway(s3_url)) as (base, seen):
        result = await run_against(tmp_path, f"{base}/v1")
        paths = {r.path for r in seen}
    assert result.code == 1, result.stderr[-3000:]
    assert paths == {"/v1/patient/5/patient_attachment", "/v1/patient/0/patient_attachment"
                     } or paths == {"/v1/patient/5/patient_attachment"}, paths
    items = result.report(tmp_path / "r")["items"]
    assert items[0]["status"] == "missing"  # sent; this API never makes a record
    for item in items[1:]:
        assert item["status"] == "invalid", item
        assert "client_id" in item["error"], item["error"]


async def test_a_source_folder_named_like_a_dot_segment_is_an_invalid_row(
        tmp_path: Path) -> None:
    for name in ("%2e%2e", "a\\b", "5"):
        (tmp_path / "in" / name).mkdir(parents=True)
        (tmp_path / "in" / name / "a.pdf").write_bytes(b"%PDF")
    result = await run_cli("run", "--dry-run", "--source-dir", str(tmp_path / "in"),
                           "--state", str(tmp_path / "s.db"), "--report-dir",
                           str(tmp_path / "r"), cwd=tmp_path)
    assert result.code == 1, result.stderr[-2000:]
    items = {it["client_id"]: it for it in result.report(tmp_path / "r", "dry-run")["items"]}
    assert items["%2e%2e"]["status"] == items["a\\b"]["status"] == "invalid"
    assert items["5"]["status"] != "invalid"


@pytest.mark.parametrize("client_id", ["..", ".", "", "a/b", "%2e%2e"])
async def test_the_api_client_never_builds_such_a_url(client_id: str) -> None:
    async with serve(gateway("http://127.0.0.1:9")) as (base, seen), \
            aiohttp.ClientSession() as session:
        api = client(session, base)
        with pytest.raises(Permanent, match="client_id"):
            await api.presign(client_id, "a.pdf")
        with pytest.raises(Permanent, match="client_id"):
            await api.list_page(client_id, api.first_page(client_id))
    assert seen == []
