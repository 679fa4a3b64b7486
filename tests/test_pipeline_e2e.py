"""The whole pipeline as an operator runs it: the CLI against the sandbox, real sockets."""

from __future__ import annotations

import json
import stat
from collections import Counter
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest import MAX_FILE_BYTES
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.sandbox.ledger import DescriptionMode

pytestmark = pytest.mark.slow


def bad_rows(root: Path, good: list[dict[str, str]]) -> list[dict[str, str]]:
    big = root / "files" / "1" / "too big.pdf"
    with big.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)
    (root / "files" / "1" / "no extension").write_bytes(b"data")
    return [
        {"client_id": "1", "path": "files/1/gone.pdf", "note": "missing"},
        {"client_id": "1", "path": "files/1/too big.pdf", "note": "too big"},
        {"client_id": "1", "path": "files/1/no extension", "note": "no ext"},
        {"client_id": "", "path": good[0]["path"], "note": "empty client"},
        {"client_id": "424242", "path": good[0]["path"], "note": "unknown client"},
        dict(good[1], note="duplicate"),
    ]


async def test_a_mixed_migration_ends_with_every_row_accounted_for(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.2, seed=1)) as sb:
        good = make_files(tmp_path, 300, ["1", "2", "3", "4", "1001"])
        manifest = write_manifest(tmp_path, good + bad_rows(tmp_path, good))
        cfg = config(tmp_path, sb)
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        stats = sb.stats()
    assert result.code == 1, result.stderr[-2000:]
    report = result.report(tmp_path / "reports")
    items = report["items"]
    assert len(items) == 306
    assert report["summary"] == {"total": 306, "validated": 300, "missing": 0, "failed": 1,
                                 "invalid": 4, "skipped": 1, "pending": 0,
                                 "verified": 0}  # nothing ambiguous: no bytes read
    by_note = {it["extra"]["note"]: it for it in items}
    assert by_note["missing"]["error"] == "file not found"
    assert "104,857,601 bytes" in by_note["too big"]["error"]
    assert "no extension" in by_note["no ext"]["error"]
    assert by_note["empty client"]["error"] == "line 305: missing client_id"
    assert by_note["unknown client"]["status"] == "failed"
    assert "NOT_FOUND" in by_note["unknown client"]["error"]
    assert "request_id" in by_note["unknown client"]["error"]
    dup = by_note["duplicate"]
    assert dup["status"] == "skipped" and "line 3" in dup["error"]
    assert dup["attachment_id"] == by_note["n1"]["attachment_id"]
    # every good row has its own record, and PracSuite holds exactly one per row
    validated = [it for it in items if it["status"] == "validated"]
    assert len({it["attachment_id"] for it in validated}) == 300
    created = stats["records_created"]
    assert sum(c["count"] for c in created.values()) == 300
    keys_by_record = {r["id"]: r["key"] for c in created.values() for r in c["records"]}
    for it in validated:
        assert keys_by_record[it["attachment_id"]] == it["key"]
    assert "run " in result.stdout and "report:" in result.stdout
    mode = stat.S_IMODE((tmp_path / "reports" / "latest.json").stat().st_mode)
    assert mode == 0o600


async def test_a_rerun_sends_nothing_for_validated_files(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.1)) as sb:
        rows = make_files(tmp_path, 40, ["5", "6"])
        manifest = write_manifest(tmp_path, rows)
        cfg = config(tmp_path, sb)
        first = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                              cwd=tmp_path)
        presigns_before = sb.stats()["presigned"]
        second = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        stats = sb.stats()
    assert first.code == 0, first.stderr[-2000:]
    assert second.code == 0, second.stderr[-2000:]
    assert stats["presigned"] == presigns_before == 40
    report = second.report(tmp_path / "reports")
    assert report["summary"]["skipped"] == 40 and report["run_id"] not in first.stdout
    assert all(it["attachment_id"] for it in report["items"])


@pytest.mark.parametrize(("list_key", "description", "links"), [
    ("bare", DescriptionMode.EMPTY, True),
    ("patient_attachments", DescriptionMode.EMPTY, False),
    ("items", DescriptionMode.FILE_NAME, True),
    ("data", DescriptionMode.TEXT, False),
])
async def test_every_list_envelope_and_description_variant_reconciles(
        tmp_path: Path, list_key: str, description: DescriptionMode, links: bool) -> None:
    # 120 existing records per client: the list spans pages, and old records with the
    # same names must never be claimed. The suite-wide contract check (conftest.py)
    # fails this test if any request the worker sent is not a documented operation.
    opts = SandboxOptions(validation_delay_s=0.1, list_key=list_key,
                          description_mode=description, existing_records_per_client=120,
                          record_links=links)
    async with Sandbox(opts) as sb:
        rows = make_files(tmp_path, 24, ["7", "8"])
        # the same name twice for one client: two uploads, two records
        (tmp_path / "files" / "7" / "twin.pdf").write_bytes(b"twin one")
        (tmp_path / "files" / "7" / "sub").mkdir()
        (tmp_path / "files" / "7" / "sub" / "twin.pdf").write_bytes(b"twin two")
        rows += [{"client_id": "7", "path": "files/7/twin.pdf"},
                 {"client_id": "7", "path": "files/7/sub/twin.pdf"}]
        manifest = write_manifest(tmp_path, rows)
        cfg = config(tmp_path, sb, api={"page_size": 50})
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        stats = sb.stats()
        name_reads = [ex for ex in sb.api_requests if ex.path.endswith("/presign_url")]
    assert result.code == 0, result.stderr[-3000:]
    report = result.report(tmp_path / "reports")
    ids = [it["attachment_id"] for it in report["items"]]
    assert len(set(ids)) == 26
    created = {r["id"] for c in stats["records_created"].values() for r in c["records"]}
    assert set(ids) == created
    if description is not DescriptionMode.FILE_NAME:
        # no record carries the name: every match was read back through presign_url,
        # on the documented path (or the record's own link to it)
        assert len(name_reads) >= 26
        assert {ex.status for ex in name_reads} == {200}
        assert all(ex.path.startswith("/v1/patient_attachment/") for ex in name_reads)


async def test_folder_input_and_dry_run_send_nothing(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions()) as sb:
        make_files(tmp_path, 10, ["9", "10"])
        (tmp_path / "files" / "9" / ".DS_Store").write_bytes(b"x")
        cfg = config(tmp_path, sb)
        result = await run_cli("run", "--config", str(cfg), "--source-dir",
                               str(tmp_path / "files"), "--dry-run", cwd=tmp_path)
        stats = sb.stats()
    assert result.code == 0, result.stderr[-2000:]
    report = result.report(tmp_path / "reports", "dry-run")
    assert report["summary"]["pending"] == 10 and report["summary"]["total"] == 10
    assert sum(Counter(v).total() for v in stats["requests"].values()) == 0


async def test_secrets_never_reach_logs_or_reports(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.1, fail_rate_500=0.2,
                                      s3_slowdown_rate=0.2, seed=3)) as sb:
        rows = make_files(tmp_path, 20, ["11"])
        manifest = write_manifest(tmp_path, rows)
        cfg = config(tmp_path, sb, log={"level": "debug", "format": "json"})
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        secrets = [sb.vendor_key, sb.practice_key, sb.options.s3_secret_key,
                   sb.options.session_token or "never"]
    assert result.code == 0, result.stderr[-2000:]
    everything = result.stdout + result.stderr + "".join(
        p.read_text() for p in (tmp_path / "reports").iterdir())
    for secret in secrets:
        assert secret not in everything
    for marker in ("x-amz-signature", "X-Amz-Signature", "eyJleHBpcmF0aW9u", "Policy"):
        assert marker not in everything
    for line in result.stderr.splitlines():
        event = json.loads(line)
        assert "file_name" not in event and "path" not in event
    assert "00000 letter.pdf" not in result.stderr  # patient file names stay out of logs
