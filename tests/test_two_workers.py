"""Two workers on one practice with separate state files (two operators, a copied
config): nothing in PracSuite can tell their uploads of the same file apart, and a
lease is not possible. Each may claim the same record; neither may do so without
saying so (issue 27)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.reconcile.claims import Digest
from pracsuite_ingest.reconcile.match import Evidence, Upload
from pracsuite_ingest.reconcile.twins import twins, twins_text
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions


def test_a_claim_on_the_bytes_names_the_other_records_with_the_same_bytes() -> None:
    up = Upload(1, "7", "a.pdf", 3, "temp/k/a.pdf", sha256="s")
    other = Upload(2, "7", "b.pdf", 3, "temp/k/b.pdf", sha256="t")
    evidence = Evidence(proven={}, named={1: ["10", "11", "12"], 2: ["13"]})
    digests = {"10": Digest(3, "s"), "11": Digest(3, "s"), "12": Digest(3, "x"),
               "13": Digest(3, "t")}
    claims = {1: ("10", True), 2: ("13", True)}
    assert twins(claims, [up, other], evidence, digests) == {1: ["11"]}
    # a claim not made on the bytes (a key proved it) says nothing of lookalikes
    assert twins({1: ("10", False)}, [up], evidence, digests) == {}
    # a record this poll claims for another upload is not "another upload"
    assert twins({1: ("10", True), 3: ("11", True)}, [up], evidence, digests) == {}
    assert "attachment 11" in twins_text(["11"])


async def test_two_workers_on_one_practice_never_claim_one_record_without_saying_so(
        tmp_path: Path) -> None:
    # Both send the same 4 files; PracSuite makes their records only after both runs
    # gave up waiting (12 s validation, 1 s deadline: room for a slow start): each
    # run's `reconcile` then sees both records of each file, which name and size cannot
    # tell apart (the records carry no name): the bytes decide, and they are the same.
    async with Sandbox(SandboxOptions(validation_delay_s=12.0)) as sb:
        rows = make_files(tmp_path, 4, ["7"], size=2000)
        manifest = write_manifest(tmp_path, rows)
        cfgs = []
        for who in ("a", "b"):
            (tmp_path / who).mkdir()
            cfgs.append(config(tmp_path / who, sb,
                               reconcile={"deadline_s": 1, "poll_interval_s": 0.5}))
        sent = await asyncio.gather(*(run_cli("run", "--config", str(c), "--manifest",
                                              str(manifest), cwd=tmp_path) for c in cfgs))
        async with asyncio.timeout(60):
            while sb.stats()["records_created_total"] < 8:  # noqa: ASYNC110 - polled
                await asyncio.sleep(0.2)
        results = [await run_cli("reconcile", "--config", str(c), cwd=tmp_path) for c in cfgs]
    for r in sent:  # each gave up before any record existed
        assert r.code == 1, r.stderr[-3000:]
    for r in results:
        assert r.code == 0, r.stderr[-3000:]
    reports = [r.report(tmp_path / who / "reports") for r, who in zip(results, "ab",
                                                                       strict=True)]
    by_record: dict[str, list[dict[str, object]]] = {}
    for rep in reports:
        for it in rep["items"]:
            assert it["status"] == "validated" and it["verified"] is True, it
            by_record.setdefault(str(it["attachment_id"]), []).append(it)
    doubly = [its for its in by_record.values() if len(its) > 1]
    assert doubly, json.dumps(by_record)  # the premise: the same bytes, claimed twice
    for its in doubly:  # each claim of a record claimed twice says so
        for it in its:
            assert "another upload of this file exists" in str(it["error"]), its
