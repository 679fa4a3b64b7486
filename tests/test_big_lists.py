"""One patient with more attachments than the walk's floor (issue 22): a list of 30,000
real records is read to its end (total_entries, or what the poll expects, vouches for
it), a list without end still ends; a walk keeps a few facts per record, not the
records, and those facts decide exactly what the whole records decide."""

from __future__ import annotations

import asyncio
import itertools
import random
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pracsuite_ingest.api import PracSuiteClient
from pracsuite_ingest.errors import Permanent
from pracsuite_ingest.list_walk import CEILING_PAGES, CEILING_RECORDS, MAX_RECORDS, WalkLimits
from pracsuite_ingest.rate_gate import RateGate
from pracsuite_ingest.reconcile.facts import Relevant, record_id, view
from pracsuite_ingest.reconcile.match import RecordView, Upload, match, names_to_read
from pracsuite_ingest.reconcile.records import list_records
from test_hostile_answers import PRACTICE, VENDOR, serve
from test_reconcile_index import scenario

pytestmark = pytest.mark.timeout(120)
REAL = 30_000  # past the old fixed cap of 20,000 records
PAGE = 100


def record(n: int) -> dict[str, Any]:
    return {"patient_attachment_id": str(n), "file_size": 10, "description": "",
            "links": {"presign_url": f"/v1/patient_attachment/{n}/presign_url"}}


async def no_retry(op: Any) -> Any:
    return await op()


def pages(count: int, *, total: int | None, bare: bool = False) -> Any:
    """A list of `count` records, PAGE a page (`links.next`, or a bare array)."""

    async def api(request: web.Request) -> web.StreamResponse:
        page = int(request.query.get("page", "1"))
        start = (page - 1) * PAGE
        records = [record(n) for n in range(start, min(start + PAGE, count))]
        if bare:
            return web.json_response(records)
        nxt = (f"/v1/patient/7/patient_attachment?page={page + 1}&page_size={PAGE}"
               if start + PAGE < count else None)
        body: dict[str, Any] = {"patient_attachments": records, "links": {"next": nxt}}
        if total is not None:
            body["total_entries"] = total
        return web.json_response(body)

    return api


async def read_ids(handler: Any, expected: int = 0) -> list[str]:
    async with serve(handler) as (base, _), aiohttp.ClientSession() as session:
        api = PracSuiteClient(session, f"{base}/v1", VENDOR, PRACTICE, RateGate(10_000.0),
                              timeout_s=5.0, page_size=PAGE)
        return await asyncio.wait_for(
            list_records(api, "7", no_retry, record_id, expected), 100)


async def test_a_list_of_30000_records_with_its_total_entries_is_read_to_its_end() -> None:
    ids = await read_ids(pages(REAL, total=REAL))
    assert len(ids) == REAL and ids[-1] == str(REAL - 1)


async def test_a_bare_list_of_30000_records_is_read_when_the_poll_expects_them() -> None:
    # No total_entries at all: the records the poll knows of (snapshot, claims, uploads).
    ids = await read_ids(pages(REAL, total=None, bare=True), expected=REAL)
    assert len(ids) == REAL


async def test_a_bare_list_past_the_floor_that_nothing_vouches_for_still_ends() -> None:
    with pytest.raises(Permanent, match=f"past {MAX_RECORDS:,} records"):
        await read_ids(pages(REAL, total=None, bare=True))


async def test_an_endless_list_claiming_a_total_ends_past_that_total() -> None:
    counter = itertools.count()

    async def api(request: web.Request) -> web.StreamResponse:
        page = int(request.query.get("page", "1"))
        return web.json_response({
            "patient_attachments": [record(next(counter)) for _ in range(PAGE)],
            "total_entries": REAL,
            "links": {"next": f"/v1/patient/7/patient_attachment?page={page + 1}"}})

    with pytest.raises(Permanent, match=r"total_entries \(30,000\)"):
        await read_ids(api)
    assert next(counter) == REAL + PAGE  # its pages, and one for records added meanwhile


def test_the_record_cap_grows_with_what_is_vouched_for_up_to_a_ceiling() -> None:
    limits = WalkLimits()
    assert limits.records_cap(None) == MAX_RECORDS
    assert limits.records_cap(100) == MAX_RECORDS
    assert limits.records_cap(100_000) > 100_000
    assert WalkLimits(expected=100_000).records_cap(None) > 100_000
    assert limits.records_cap(10**12) == CEILING_RECORDS  # a lying total_entries
    assert limits.pages_cap(None, PAGE) == limits.max_pages
    assert limits.pages_cap(100_000, PAGE) > 100_000 // PAGE
    assert limits.seconds_cap(None, PAGE) == limits.max_seconds
    # a list of one record a page vouched for by a huge total: bounded pages and time
    assert limits.pages_cap(10**12, 1) == CEILING_PAGES
    assert limits.seconds_cap(10**12, 1) == CEILING_PAGES * 1.0


def test_the_facts_kept_of_each_record_decide_what_the_whole_records_decide() -> None:
    # On random uploads and records (uuids in any case, names with "/", spaces, NFD,
    # keys without a uuid): match and names_to_read answer the same on what
    # `Relevant.view` keeps as on every string of every record.
    rng = random.Random(22)
    checked = 0
    for _ in range(1500):
        uploads, records, excluded, names = scenario(rng)
        raw = [{"attachment_client_id": r.record_id, "file_size": r.file_size,
                "description": list(r.strings)} for r in records]
        kept = [v for v in map(Relevant.of(uploads, excluded).view, raw) if v is not None]
        full = [v for v in map(view, raw) if v is not None]
        first = match(uploads, full, excluded, names)
        assert match(uploads, kept, excluded, names) == first
        assert names_to_read(kept, uploads, frozenset(excluded), first, names) == \
            names_to_read(full, uploads, frozenset(excluded), first, names)
        checked += len(full) - len(kept)
    assert checked  # some records were not kept at all (claimed, or in every snapshot)


def test_a_record_keeps_only_the_strings_that_prove_or_name_an_upload() -> None:
    key_uuid = str(uuid.UUID(int=7))
    uploads = [Upload(1, "7", "scan.pdf", 10, f"temp/1/7/{key_uuid}/scan.pdf"),
               Upload(2, "7", "b.pdf", 10, f"temp/1/7/{uuid.UUID(int=8)!s}/b.pdf")]
    facts = Relevant.of(uploads, {"claimed"}).view({
        "attachment_client_id": 55, "file_size": 10, "file_date": "2026-12-05",
        "description": "folder/scan.pdf", "note": f"s3://b/{key_uuid.upper()}/x",
        "links": {"self": "/v1/patient_attachment/55",
                  "presign_url": "/v1/patient_attachment/55/presign_url"}})
    assert facts == RecordView("55", ("folder/scan.pdf", f"s3://b/{key_uuid.upper()}/x"), 10,
                               "/v1/patient_attachment/55/presign_url")
    assert Relevant.of(uploads, {"claimed"}).view({"attachment_client_id": "claimed"}) is None


async def test_a_poll_over_30000_records_keeps_a_few_facts_of_each_not_the_records() -> None:
    # Each record carries 2 KB of strings that can prove or name none of the uploads (a
    # note, links): the walk drops them page by page. Keeping every string, as the views
    # did, held more than 2 KB a record; measured in bytes allocated, not in time.
    note = "n" * 2000

    async def api(request: web.Request) -> web.StreamResponse:
        page = int(request.query.get("page", "1"))
        start = (page - 1) * PAGE
        records = [record(n) | {"note": f"{note}{n}"} for n in range(start, start + PAGE)
                   if n < REAL]
        nxt = (f"/v1/patient/7/patient_attachment?page={page + 1}"
               if start + PAGE < REAL else None)
        return web.json_response({"patient_attachments": records, "total_entries": REAL,
                                  "links": {"next": nxt}})

    uploads = [Upload(i, "7", f"{i}.pdf", 10, f"temp/1/7/{uuid.UUID(int=i)}/{i}.pdf")
               for i in range(50)]
    relevant = Relevant.of(uploads, frozenset())
    async with serve(api) as (base, _), aiohttp.ClientSession() as session:
        client = PracSuiteClient(session, f"{base}/v1", VENDOR, PRACTICE,
                                 RateGate(10_000.0), timeout_s=5.0, page_size=PAGE)
        tracemalloc.start()
        try:
            kept = await list_records(client, "7", no_retry, relevant.view, len(uploads))
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(kept) == REAL and all(v.strings == () for v in kept)
    assert held < REAL * 400  # some 200 bytes a record: id, size, the view itself


async def test_a_patient_with_25000_attachments_before_the_run_gets_its_files_validated(
        tmp_path: Path) -> None:
    # The real worker against the sandbox: patient 1 already has 25,000 records (someone
    # else's), so its snapshot and every poll walk 250 pages. With the fixed 20,000 cap
    # the snapshot failed and so did every file of the patient.
    from pracsuite_ingest.models import Stage
    from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
    from test_one_patient import run_one_patient

    async with Sandbox(SandboxOptions(validation_delay_s=0.0, clients=("1",),
                                      existing_records_per_client=25_000)) as sb:
        items = await run_one_patient(sb, tmp_path, 5)
    assert [i.stage for i in items] == [Stage.VALIDATED] * 5, [i.error for i in items]
