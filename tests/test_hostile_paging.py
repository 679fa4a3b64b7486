"""A patient's attachment list that never ends: a loopback PracSuite whose `links.next`
loops, whose bare array answers a full page for every page number, or whose pages of new
records go on for ever. Every walk ends with a clear error (issue 27, point 2)."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hostile import accepting_s3, run_against
from pracsuite_ingest.api import PracSuiteClient
from pracsuite_ingest.errors import Permanent
from pracsuite_ingest.rate_gate import RateGate
from pracsuite_ingest.reconcile.records import list_records
from test_hostile_answers import PRACTICE, VENDOR, Handler, presign_body, serve

pytestmark = pytest.mark.timeout(120)
WALK_S = 60  # on the old code each walk below never ends: it fails here instead


def record(n: int) -> dict[str, Any]:
    return {"patient_attachment_id": str(n), "file_name": f"{n}.pdf", "file_size": 10}


async def no_retry(op: Any) -> Any:
    return await op()


async def walk(base: str, **limits: Any) -> tuple[str, int]:
    """Walk client 7's list as the worker does; (the error, GETs made)."""
    from pracsuite_ingest.list_walk import WalkLimits

    async with aiohttp.ClientSession() as session:
        api = PracSuiteClient(session, f"{base}/v1", VENDOR, PRACTICE, RateGate(1000.0),
                              timeout_s=5.0, page_size=2, walk_limits=WalkLimits(**limits))
        with pytest.raises(Permanent) as caught:
            await asyncio.wait_for(list_records(api, "7", no_retry), WALK_S)
        return str(caught.value), api.calls


def listing(records: list[dict[str, Any]], nxt: str | None, total: int | None = None
            ) -> web.Response:
    body: dict[str, Any] = {"patient_attachments": records, "links": {"next": nxt}}
    if total is not None:
        body["total_entries"] = total
    return web.json_response(body)


async def test_a_links_next_to_the_same_page_ends_the_walk() -> None:
    async def api(request: web.Request) -> web.StreamResponse:
        return listing([record(1), record(2)], str(request.rel_url))

    async with serve(api) as (base, _):
        error, calls = await walk(base)
    assert "loops" in error and "page already read" in error and calls == 1


async def test_a_links_next_cycle_between_two_pages_ends_the_walk() -> None:
    async def api(request: web.Request) -> web.StreamResponse:
        page = int(request.query.get("page", "1"))
        other = 2 if page == 1 else 1
        return listing([record(page)],
                       f"/v1/patient/7/patient_attachment?page={other}&page_size=2")

    async with serve(api) as (base, _):
        error, calls = await walk(base)
    assert "loops" in error and calls == 2


async def test_the_same_records_under_ever_new_urls_end_the_walk() -> None:
    counter = itertools.count(2)

    async def api(_: web.Request) -> web.StreamResponse:
        return listing([record(1), record(2)],
                       f"/v1/patient/7/patient_attachment?page={next(counter)}")

    async with serve(api) as (base, _):
        error, calls = await walk(base)
    assert "repeats itself" in error and calls == 2


async def test_a_bare_array_answering_a_full_page_for_every_page_ends_the_walk() -> None:
    async def api(_: web.Request) -> web.StreamResponse:
        return web.json_response([record(1), record(2)])  # page_size is 2

    async with serve(api) as (base, _):
        error, calls = await walk(base)
    assert "repeats itself" in error and calls == 2


async def test_new_records_for_ever_stop_at_the_record_cap() -> None:
    counter = itertools.count()

    async def api(_: web.Request) -> web.StreamResponse:  # a bare array: no links at all
        return web.json_response([record(next(counter)), record(next(counter))])

    async with serve(api) as (base, _):
        error, calls = await walk(base, max_records=300)
    assert "past 300 records" in error and calls == 151


async def test_pages_past_what_total_entries_can_fill_end_the_walk() -> None:
    counter = itertools.count()

    async def api(request: web.Request) -> web.StreamResponse:
        page = int(request.query.get("page", "1"))
        return listing([record(next(counter)), record(next(counter))],
                       f"/v1/patient/7/patient_attachment?page={page + 1}", total=5)

    async with serve(api) as (base, _):
        error, calls = await walk(base)
    # 5 records, 2 a page: 3 pages, and one more for records added meanwhile
    assert "total_entries (5)" in error and calls == 4


async def test_the_page_cap_holds_without_total_entries() -> None:
    counter = itertools.count()

    async def api(request: web.Request) -> web.StreamResponse:
        page = int(request.query.get("page", "1"))
        return listing([record(next(counter))],
                       f"/v1/patient/7/patient_attachment?page={page + 1}")

    async with serve(api) as (base, _):
        error, calls = await walk(base, max_pages=25)
    assert "more than 25" in error and calls == 25


async def test_a_slow_endless_list_ends_at_the_walks_time_limit() -> None:
    counter = itertools.count()

    async def api(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.05)
        page = int(request.query.get("page", "1"))
        return listing([record(next(counter))],
                       f"/v1/patient/7/patient_attachment?page={page + 1}")

    async with serve(api) as (base, _):
        error, _calls = await walk(base, max_seconds=1.0)
    assert "took longer than 1 s" in error


async def test_a_looping_list_fails_that_patients_items_and_the_run_ends(
        tmp_path: Path) -> None:
    """The CLI against a PracSuite whose list for patient 1 loops for ever: patient 1's
    item fails with the reason, patient 2's is uploaded, the report is written."""
    async with serve(accepting_s3) as (s3_url, _):
        async def api(request: web.Request) -> web.StreamResponse:
            client_id = request.path.split("/")[3]
            if request.method == "GET" and client_id == "1":
                return listing([record(1)], str(request.rel_url))
            if request.method == "GET":
                return listing([], None, total=0)
            return web.Response(text=presign_body(
                url=f"{s3_url}/b", key=f"temp/1/{client_id}/1/1/u/{client_id}.pdf"),
                content_type="application/json")

        handler: Handler = api
        async with serve(handler) as (base, seen):
            rows = ["client_id,path"]
            for client_id in ("1", "2"):
                (tmp_path / f"{client_id}.pdf").write_bytes(b"x" * 10)
                rows.append(f"{client_id},{client_id}.pdf")
            (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
            result = await run_against(tmp_path, f"{base}/v1",
                                       api_extra="requests_per_second = 500.0\n", limit_s=90)
            lists = sum(1 for r in seen if r.method == "GET" and "/patient/1/" in r.path)
    assert result.code == 1, result.stderr[-3000:]
    items = {it["client_id"]: it for it in result.report(tmp_path / "r")["items"]}
    assert items["1"]["status"] == "failed" and "loops" in items["1"]["error"]
    assert items["2"]["status"] == "missing"  # uploaded; this API never makes a record
    assert lists < 10
    assert VENDOR not in json.dumps(items) and PRACTICE not in json.dumps(items)


async def test_a_patient_whose_list_cannot_be_read_is_asked_once_not_once_per_file(
        tmp_path: Path) -> None:
    """Patient 1's list answers 500 every time: its snapshot is tried once (with its
    retries), and all 8 of its files fail with that reason; patient 2 goes on."""
    async with serve(accepting_s3) as (s3_url, _):
        async def api(request: web.Request) -> web.StreamResponse:
            client_id = request.path.split("/")[3]
            if request.method == "GET" and client_id == "1":
                return web.json_response({"error": {"status": 500, "code": "SERVER_ERROR",
                                                     "detail": "down"}}, status=500)
            if request.method == "GET":
                return listing([], None, total=0)
            return web.Response(text=presign_body(
                url=f"{s3_url}/b", key=f"temp/1/{client_id}/1/1/u/{client_id}.pdf"),
                content_type="application/json")

        handler: Handler = api
        async with serve(handler) as (base, seen):
            rows = ["client_id,path"]
            for n in range(8):
                (tmp_path / f"1-{n}.pdf").write_bytes(b"x" * 10)
                rows.append(f"1,1-{n}.pdf")
            (tmp_path / "2.pdf").write_bytes(b"y" * 10)
            rows.append("2,2.pdf")
            (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
            result = await run_against(tmp_path, f"{base}/v1",
                                       api_extra="requests_per_second = 500.0\n", limit_s=120)
            lists = sum(1 for r in seen if r.method == "GET" and "/patient/1/" in r.path)
            presigns = [r for r in seen if r.method == "POST"]
    assert result.code == 1, result.stderr[-3000:]
    items = result.report(tmp_path / "r")["items"]
    ones = [it for it in items if it["client_id"] == "1"]
    assert len(ones) == 8 and all(it["status"] == "failed" for it in ones), ones
    assert all("SERVER_ERROR" in it["error"] for it in ones), [it["error"] for it in ones]
    assert lists == 2  # one snapshot, max_attempts = 2; the old code asked per file (16)
    assert [r.path for r in presigns] == ["/v1/patient/2/patient_attachment"]
