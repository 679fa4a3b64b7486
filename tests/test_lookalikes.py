"""Someone else's lookalike records (same patient, file name and size, other bytes) are
never claimed, under every `reconcile.verify`, whether they appear just before ours,
just after it, or alone at a poll before ours appears; with records that carry no name
and with records whose description is the file name. Real runs against the sandbox,
whose S3 gives its objects' MD5 as the ETag and honours Range (the checksum path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.sandbox.ledger import DescriptionMode

DESCRIPTIONS = [DescriptionMode.EMPTY, DescriptionMode.FILE_NAME]


async def _run(tmp_path: Path, verify: str, options: SandboxOptions,
               deadline_s: float = 20) -> tuple[int, dict[str, Any], dict[str, Any]]:
    async with Sandbox(options) as sb:
        rows = make_files(tmp_path, 6, ["1", "2"], size=2000)
        cfg = config(tmp_path, sb, reconcile={"deadline_s": deadline_s,
                                              "poll_interval_s": 0.3, "verify": verify})
        result = await run_cli("run", "--config", str(cfg), "--manifest",
                               str(write_manifest(tmp_path, rows)), cwd=tmp_path)
        stats = sb.stats()
    return result.code, result.report(tmp_path / "reports"), stats


def _assert_no_foreign_claim(report: dict[str, Any], stats: dict[str, Any]) -> None:
    others = {r["id"] for r in stats["records_by_others"]}
    assert len(others) == 6  # a lookalike for every upload, there to be claimed
    claimed = {it["attachment_id"] for it in report["items"] if it["attachment_id"]}
    assert claimed.isdisjoint(others)
    own = {r["id"]: r["key"] for c in stats["records_created"].values() for r in c["records"]}
    assert all(own[it["attachment_id"]] == it["key"] for it in report["items"]
               if it["attachment_id"])


@pytest.mark.parametrize("description", DESCRIPTIONS)
@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("verify", ["off", "ambiguous", "all"])
async def test_a_lookalike_beside_ours_is_never_claimed_under_any_verify(
        tmp_path: Path, verify: str, after: bool, description: DescriptionMode) -> None:
    options = SandboxOptions(validation_delay_s=0.1, others_rate=1.0, seed=5,
                             others_after=after, description_mode=description)
    code, report, stats = await _run(tmp_path, verify, options,
                                     deadline_s=3 if verify == "off" else 20)
    _assert_no_foreign_claim(report, stats)
    if verify == "off":  # name and size cannot tell: left missing, both records named
        others = {r["id"] for r in stats["records_by_others"]}
        assert code == 1
        for it in report["items"]:
            if it["status"] == "missing":
                assert any(rid in it["error"] for rid in others)
    else:
        assert code == 0
        assert report["summary"]["validated"] == report["summary"]["verified"] == 6


@pytest.mark.parametrize("description", DESCRIPTIONS)
async def test_with_verify_all_a_lookalike_alone_at_a_poll_before_ours_is_never_claimed(
        tmp_path: Path, description: DescriptionMode) -> None:
    # The lookalike's record is there 1.5 s before ours, polled every 0.3 s: at least one
    # poll sees it alone, one record of the name for one upload. Nothing in the list
    # tells it from ours; the storage's checksum does. `ambiguous` reads no bytes for a
    # match that is single at every poll: the risk docs/proof.md states.
    options = SandboxOptions(validation_delay_s=0.1, others_rate=1.0, seed=5,
                             others_lead_s=1.5, description_mode=description)
    code, report, stats = await _run(tmp_path, "all", options)
    _assert_no_foreign_claim(report, stats)
    assert code == 0
    assert report["summary"]["validated"] == report["summary"]["verified"] == 6


async def test_records_carrying_the_key_are_proof_read_nothing_and_claim_no_lookalike(
        tmp_path: Path) -> None:
    options = SandboxOptions(validation_delay_s=0.1, others_rate=1.0, seed=5,
                             description_mode=DescriptionMode.KEY)
    code, report, stats = await _run(tmp_path, "ambiguous", options)
    _assert_no_foreign_claim(report, stats)
    assert code == 0 and report["summary"]["validated"] == 6
    assert all(it["verified"] is None for it in report["items"])  # proof, not bytes
    assert not stats["requests"]["presign_url"] and not stats["requests"]["s3_get"]
    assert stats["s3_bytes_served"] == 0


async def test_where_nothing_is_ambiguous_the_default_reads_no_name_and_no_byte(
        tmp_path: Path) -> None:
    # Records carrying the name, no lookalike: each record is the one new record of its
    # name and size for one upload of it. No `presign_url` call, no storage request.
    options = SandboxOptions(validation_delay_s=0.1, description_mode=DescriptionMode.FILE_NAME)
    code, report, stats = await _run(tmp_path, "ambiguous", options)
    assert code == 0 and report["summary"]["validated"] == 6
    assert report["summary"]["verified"] == 0
    assert all(it["verified"] is None for it in report["items"])
    assert not stats["requests"]["presign_url"] and not stats["requests"]["s3_get"]
    assert stats["s3_bytes_served"] == 0


async def test_with_verify_all_records_carrying_the_name_are_proven_by_one_byte_each(
        tmp_path: Path) -> None:
    # No lookalike: six records, each proven by the storage's MD5 (a 1-byte ranged GET),
    # none downloaded.
    options = SandboxOptions(validation_delay_s=0.1, description_mode=DescriptionMode.FILE_NAME)
    code, report, stats = await _run(tmp_path, "all", options)
    assert code == 0 and report["summary"]["validated"] == report["summary"]["verified"] == 6
    assert stats["requests"]["s3_get"] == {"206": 6}
    assert stats["s3_bytes_served"] == 6
