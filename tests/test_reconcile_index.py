"""Reconcile at scale: `match` answers as the pairwise rules do, name look-ups overlap."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import pytest

from pracsuite_ingest.errors import Permanent
from pracsuite_ingest.reconcile.match import (
    Evidence,
    RecordView,
    Upload,
    _named,
    _proof,
    match,
    record_order,
)
from pracsuite_ingest.reconcile.records import NAME_LOOKUPS_IN_FLIGHT, RecordReader, view

T = TypeVar("T")


def pairwise(uploads: list[Upload], records: list[RecordView], excluded: set[str],
             names: Mapping[str, str]) -> Evidence:
    """The rules applied to every (upload, record) pair: the reference `match` must equal."""
    candidates = sorted((r for r in records if r.record_id not in excluded),
                        key=lambda r: record_order(r.record_id))
    taken: set[str] = set()
    proven: dict[int, str] = {}
    pending = sorted(uploads, key=lambda u: u.item_id)
    for up in pending:
        for rec in candidates:
            if rec.record_id not in taken and _proof(up, rec):
                proven[up.item_id] = rec.record_id
                taken.add(rec.record_id)
                break
    named: dict[int, list[str]] = {}
    for up in pending:
        if up.item_id in proven:
            continue
        ids = [rec.record_id for rec in candidates
               if rec.record_id not in taken and _named(up, rec, names)]
        if ids:
            named[up.item_id] = ids
    return Evidence(proven, named)


def scenario(rng: random.Random) -> tuple[list[Upload], list[RecordView], set[str],
                                          dict[str, str]]:
    names = ["a.pdf", "B.PDF", "scan 1.jpg", "x/y.pdf", "é.png", " a.pdf", "e\u0301.png"]
    uuids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(6)]
    uploads = []
    for item in range(rng.randint(0, 12)):
        name = rng.choice(names)
        key = rng.choice([f"temp/1/7/1/1/{rng.choice(uuids)}/{name}",
                          f"attachments/{rng.randint(1, 3)}/{name}"])
        uploads.append(Upload(rng.randint(1, 40) * 100 + item, "7", name,
                              rng.choice([None, 10, 20]), rng.choice([key, key, ""])))
    records = []
    known: dict[str, str] = {}
    for rid in rng.sample(range(1000, 1060), rng.randint(0, 25)):
        strings = rng.choice([
            "", rng.choice(names), f"folder/{rng.choice(names)}", f"  {rng.choice(names)} ",
            f"https://s3/temp/{rng.choice(uuids).upper()}/f", rng.choice(uploads).key
            if uploads else "", "a.pdfx", "Uploaded via API"])
        size = rng.choice([None, 10, 20])
        v = view({"attachment_client_id": rid, "description": strings, "file_size": size,
                  "links": {"self": f"/v1/x/{rid}", "note": rng.choice(["", strings[:5]])}})
        assert v is not None
        records.append(v)
        if rng.random() < 0.5:
            known[v.record_id] = rng.choice(names)
    excluded = {r.record_id for r in records if rng.random() < 0.2}
    return uploads, records, excluded, known


def test_the_indexed_match_equals_the_pairwise_rules_on_random_cases() -> None:
    rng = random.Random(5)
    for _ in range(1000):
        uploads, records, excluded, names = scenario(rng)
        assert match(uploads, records, excluded, names) == pairwise(
            uploads, records, excluded, names)


def test_a_uuid_found_in_two_records_claims_the_lower_id_first() -> None:
    key_uuid = "11111111-2222-3333-4444-555555555555"
    ups = [Upload(1, "7", "a.pdf", 10, f"temp/{key_uuid}/a.pdf"),
           Upload(2, "7", "a.pdf", 10, f"temp/{key_uuid}/a.pdf")]
    recs = [v for v in (view({"attachment_client_id": rid, "description": f"x {key_uuid} y"})
                        for rid in (12, 9)) if v is not None]
    assert match(ups, recs, set(), {}).proven == {1: "9", 2: "12"}


class SlowNames:
    """A RecordSource whose `presign_url` look-ups take a while; counts them in flight."""

    def __init__(self, fail: str | None = None) -> None:
        self.in_flight = self.most = self.calls = 0
        self.fail = fail

    def first_page(self, client_id: str) -> Any:
        raise AssertionError("not listed here")

    async def list_page(self, client_id: str, ref: Any) -> Any:
        raise AssertionError("not listed here")

    async def record_presign(self, ref: Any) -> dict[str, Any]:
        record_id = ref.record_id
        self.calls += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if record_id == self.fail:
                raise Permanent(f"presign_url {record_id}: 404")
            return {"file_name": f"{record_id}.pdf", "url": f"http://127.0.0.1/{record_id}"}
        finally:
            self.in_flight -= 1


async def once(op: Callable[[], Awaitable[T]]) -> T:
    return await op()


async def test_name_look_ups_overlap_up_to_the_bound() -> None:
    api = SlowNames()
    reader = RecordReader(api, once)
    await reader.read_names([str(i) for i in range(40)])
    assert reader.names == {str(i): f"{i}.pdf" for i in range(40)}
    assert api.most == NAME_LOOKUPS_IN_FLIGHT


async def test_a_failed_name_look_up_raises_its_own_error() -> None:
    api = SlowNames(fail="3")
    with pytest.raises(Permanent, match="presign_url 3: 404"):
        await RecordReader(api, once).read_names([str(i) for i in range(40)])
    assert api.calls < 40  # the rest were not started
