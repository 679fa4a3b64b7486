"""What is known to be refused is said before and after a send: a 0-byte file under
`upload.empty_files = "refuse"` is `invalid` at the scan; the sandbox plays both answers
PracSuite might give to an empty upload; the state file counts how often a file was sent,
and the texts a dry run and a `missing` item carry say it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from e2e import config, run_cli, write_manifest
from pracsuite_ingest.local_check import check_local
from pracsuite_ingest.models import LocalFile, Row
from pracsuite_ingest.refusals import dry_run_error, empty_file_problem, missing_error
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.settings import load_settings
from pracsuite_ingest.state import State

EMPTY_SHA = hashlib.sha256(b"").hexdigest()


async def test_an_empty_file_is_invalid_at_the_scan_only_when_known_refused(
        tmp_path: Path) -> None:
    (tmp_path / "empty.pdf").write_bytes(b"")
    row = Row(2, "42", str(tmp_path / "empty.pdf"), "empty.pdf")
    sent = await check_local(row)
    refused = await check_local(row, empty_files="refuse")
    assert isinstance(sent, LocalFile) and sent.size == 0
    assert isinstance(refused, str) and "empty (0 bytes)" in refused
    assert "upload.empty_files" in refused
    assert empty_file_problem(1, "refuse") is None


def test_empty_files_is_a_setting_with_two_values(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[upload]\nempty_files = "refuse"\n')
    assert load_settings(cfg, require_keys=False, require_input=False
                         ).upload.empty_files == "refuse"
    cfg.write_text('[upload]\nempty_files = "maybe"\n')
    with pytest.raises(Exception, match="empty_files"):
        load_settings(cfg, require_keys=False, require_input=False)


def test_the_texts_say_how_often_it_was_sent() -> None:
    assert dry_run_error(0, 10) == "dry run: would be reconciled"
    assert "sent 1 time so far" in dry_run_error(1, 10)
    assert "empty_files" not in dry_run_error(1, 10)
    text = missing_error(31.4, 2, 0)
    assert text.startswith("S3 accepted the upload but no PracSuite record appeared "
                           "within 31s (sent 2 times so far")
    assert 'upload.empty_files = "refuse"' in text and "reconcile" in text


@pytest.mark.slow
@pytest.mark.parametrize("accept", [False, True])
async def test_the_sandbox_plays_both_answers_to_an_empty_upload_and_the_state_counts_sends(
        tmp_path: Path, accept: bool) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "empty.pdf").write_bytes(b"")
    (files / "full.pdf").write_bytes(b"%PDF-1.4 something")
    manifest = write_manifest(tmp_path, [{"client_id": "42", "path": "files/empty.pdf"},
                                         {"client_id": "42", "path": "files/full.pdf"}])
    async with Sandbox(SandboxOptions(validation_delay_s=0.05,
                                      accept_empty_files=accept)) as sb:
        cfg = config(tmp_path, sb, reconcile={"deadline_s": 2, "poll_interval_s": 0.3})
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        stats = sb.stats()
    statuses = {i["file_name"]: i["status"]
                for i in result.report(tmp_path / "reports")["items"]}
    assert statuses == {"empty.pdf": "validated" if accept else "missing",
                        "full.pdf": "validated"}, result.stderr[-2000:]
    refused = [f["reason"] for f in stats["validation_failures"]]
    assert refused == ([] if accept else ["the file is empty"])
    state = State.open(tmp_path / "state.db")
    try:
        assert state.sends_of("42", "empty.pdf", EMPTY_SHA) == 1
        assert state.sends_of("42", "other.pdf", EMPTY_SHA) == 0
    finally:
        state.close()


def test_the_dry_run_plan_says_which_files_to_send_are_empty() -> None:
    from pracsuite_ingest.plan import plan_text

    items = [{"client_id": "7", "status": "pending", "size": 0, "error": None},
             {"client_id": "7", "status": "pending", "size": 10, "error": None}]
    text = plan_text({"items": items}, 0)
    assert "of which        1 empty (0-byte) file: PracSuite may refuse them" in text
    assert 'upload.empty_files = "refuse" leaves them out' in text
    assert "empty" not in plan_text({"items": items[1:]}, 0)
