"""A poll in groups of names (issue 22, `reconcile/groups.py`): matching and claiming
group by group decides, for every upload, exactly what matching all of a patient's
uploads and records at once decides; a record linking two groups joins them; and real
runs whose every name is a group of its own still never claim a lookalike."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from e2e import make_files, run_in_process, write_manifest
from pracsuite_ingest.models import Stage
from pracsuite_ingest.reconcile import groups
from pracsuite_ingest.reconcile.claims import VerifyMode, decide_claims
from pracsuite_ingest.reconcile.facts import RecordFacts
from pracsuite_ingest.reconcile.groups import UploadIndex, in_item_order, record_groups
from pracsuite_ingest.reconcile.match import RecordView, Upload, match, nfc
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.sandbox.ledger import DescriptionMode
from pracsuite_ingest.settings import load_settings


def index_of(uploads: list[Upload]) -> UploadIndex:
    index = UploadIndex()
    for up in sorted(uploads, key=lambda u: (nfc(u.file_name), u.item_id)):
        index.add(up, nfc(up.file_name))
    return index.done()


def up(item_id: int, name: str, size: int | None = 10, before: frozenset[str] = frozenset()
       ) -> Upload:
    return Upload(item_id, "7", name, size, f"temp/{uuid.UUID(int=item_id)}/{name}",
                  before, sha256="ab" * 32)


def test_every_name_is_in_one_group_and_a_record_linking_two_joins_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(groups, "GROUP", 2)
    uploads = [up(1, "a.pdf"), up(2, "a.pdf"), up(3, "a.pdf"), up(4, "b.pdf"),
               up(5, "c.pdf"), up(6, "d.pdf"), up(7, "e.pdf")]
    index = index_of(uploads)
    assert index.boundaries == ["a.pdf", "b.pdf", "d.pdf"]  # a's three stay together
    records = [RecordView("r1", ("a.pdf",), 10), RecordView("r2", ("x/c.pdf", "e.pdf"), 10),
               RecordView("r3", (f"s3://b/temp/{uuid.UUID(int=6)}/zz",), 10),
               RecordView("r4", ("nobody.pdf",), 10), RecordView("r5", (), 10)]
    found = record_groups(records, {"r5": "b.pdf"}, index)
    assert [(g.members, list(g.records)) for g in found] == [([0], [0]), ([1, 2], [1, 2, 4])]


def test_a_walks_records_kept_plain_or_whole_read_back_as_they_were() -> None:
    records = [RecordView("1", (), 10), RecordView("2", ("a.pdf",), 10),
               RecordView("3", (), None), RecordView("4", (), 7, "/own/link"),
               RecordView("5", (), -3), RecordView("x", (), 0)]
    facts = RecordFacts()
    for rec in records:
        facts.append(rec)
    assert list(facts) == records
    assert facts[-1] == records[-1] and facts[-3] == records[-3] and facts[1:3] == records[1:3]
    with pytest.raises(IndexError):
        facts[len(records)]


def scenario(seed: int) -> tuple[list[Upload], list[RecordView], dict[str, str]]:
    """Uploads and records of one patient, names and sizes drawn from small pools (so
    that names are shared, crowds form and records link across names)."""
    rnd = random.Random(seed)
    names = [f"{n}.pdf" for n in "abcdefgh"] + ["Cafe\u0301.pdf", "Caf\u00e9.pdf"]
    snap = frozenset(rnd.sample([f"s{i}" for i in range(8)], 3))
    uploads = [up(i, rnd.choice(names), rnd.choice([10, 10, 20, None]),
                  snap if rnd.random() < 0.5 else frozenset()) for i in range(1, 25)]
    records: list[RecordView] = []
    presign: dict[str, str] = {}
    for r in range(rnd.randint(5, 40)):
        rid = f"s{r}" if r < 8 else str(100 + r)
        strings: list[str] = []
        for _ in range(rnd.randint(0, 3)):
            kind = rnd.random()
            if kind < 0.25:
                strings.append(f"temp/{uuid.UUID(int=rnd.randint(1, 30))}/x")
            elif kind < 0.8:
                strings.append(rnd.choice(["", "dir/", " "]) + rnd.choice(names))
            else:
                strings.append("unrelated")
        if rnd.random() < 0.4:
            presign[rid] = rnd.choice(names)
        records.append(RecordView(rid, tuple(strings), rnd.choice([10, 20, None])))
    return uploads, records, presign


@pytest.mark.parametrize("verify", list(VerifyMode))
def test_claims_made_group_by_group_are_those_made_on_everything_at_once(
        monkeypatch: pytest.MonkeyPatch, verify: VerifyMode) -> None:
    for seed in range(300):
        monkeypatch.setattr(groups, "GROUP", 1 + seed % 3)
        uploads, records, presign = scenario(seed)
        excluded = frozenset({"s7"})
        whole = decide_claims(uploads, match(uploads, records, excluded, presign), verify, {})
        index = index_of(uploads)
        claims: dict[int, tuple[str, bool]] = {}
        crowded: dict[int, list[str]] = {}
        download: set[str] = set()
        for group in record_groups(records, presign, index):
            ups = in_item_order([u for g in group.members for u in uploads
                                 if _in(index.range_of(g), nfc(u.file_name))], index)
            recs = [records[i] for i in group.records]
            part = decide_claims(ups, match(ups, recs, excluded, presign), verify, {})
            assert claims.keys().isdisjoint(part.claims)
            claims |= part.claims
            crowded |= part.crowded
            download |= set(part.download)
        assert claims == whole.claims, seed
        assert crowded == whole.crowded, seed
        assert download == set(whole.download), seed


def _in(bounds: tuple[str, str | None], name: str) -> bool:
    low, high = bounds
    return low <= name and (high is None or name < high)


async def _run(root: Path, sb: Sandbox, verify: str, rows: list[dict[str, str]]) -> list[Any]:
    settings = load_settings(None, {
        "api": {"base_url": sb.base_url, "vendor_api_key": sb.vendor_key,
                "practice_api_key": sb.practice_key, "requests_per_second": 500.0},
        "input": {"manifest": str(write_manifest(root, rows))},
        "reconcile": {"deadline_s": 20.0, "poll_interval_s": 0.3, "verify": verify},
        "state": {"path": str(root / "state.db")}, "report": {"dir": str(root / "reports")},
        "log": {"level": "warning"}})
    return await run_in_process(settings, root / "state.db", "2026-12-05T00:00:00Z")


@pytest.mark.parametrize("description", [DescriptionMode.EMPTY, DescriptionMode.FILE_NAME])
@pytest.mark.parametrize("verify", ["ambiguous", "all"])
async def test_with_a_group_per_name_a_lookalike_beside_each_upload_is_never_claimed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verify: str,
        description: DescriptionMode) -> None:
    monkeypatch.setattr(groups, "GROUP", 1)
    rows = make_files(tmp_path, 8, ["1"], size=2000)
    options = SandboxOptions(validation_delay_s=0.1, others_rate=1.0, seed=5,
                             clients=("1",), description_mode=description)
    async with Sandbox(options) as sb:
        items = await _run(tmp_path, sb, verify, rows)
        stats = sb.stats()
    others = {r["id"] for r in stats["records_by_others"]}
    assert len(others) == 8  # a lookalike for every upload, there to be claimed
    own = {r["id"]: r["key"] for c in stats["records_created"].values() for r in c["records"]}
    assert Counter(i.stage for i in items) == {Stage.VALIDATED: 8}
    assert all(own[i.attachment_id] == i.key and i.verified for i in items)
