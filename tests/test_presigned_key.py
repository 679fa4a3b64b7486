"""The presigned key's last segment must be the requested file name (PracSuite's
validation demands it): a key naming another file fails the item with a clear error,
and nothing is sent to S3."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.api import key_name_problem
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions


def test_the_key_must_end_in_the_requested_name() -> None:
    assert key_name_problem("temp/1/2/3/4/u/letter.pdf", "letter.pdf") is None
    assert key_name_problem("temp/1/2/3/4/u/letter.pdf", "scan.pdf") is not None
    assert key_name_problem("temp/1/2/3/4/u/xletter.pdf", "letter.pdf") is not None
    assert key_name_problem("letter.pdf", "letter.pdf") is None
    problem = key_name_problem("temp/u/other.exe", "Müller.pdf")
    assert problem is not None and "Müller" not in problem and "other" not in problem


@pytest.mark.slow
async def test_a_key_naming_another_file_fails_the_item_and_sends_nothing(
        tmp_path: Path) -> None:
    opts = SandboxOptions(validation_delay_s=0.1, presign_key_name="other.exe")
    async with Sandbox(opts) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 3, ["1"], size=100))
        cfg = config(tmp_path, sb)
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        stats = sb.stats()
    assert result.code == 1, result.stderr[-2000:]
    items = result.report(tmp_path / "reports")["items"]
    assert [it["status"] for it in items] == ["failed"] * 3
    assert all("does not end in the requested file name" in it["error"] for it in items)
    assert stats["requests"]["presign"] == {"200": 3}  # asked once each: not retried
    assert stats["requests"]["s3_post"] == {}
    assert stats["uploads_stored"] == 0
