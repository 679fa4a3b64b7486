"""A `missing` file is not a nightly tax (issue 22.2; docs/contract.md, "Statuses"):
a file PracSuite never turns into a record is sent again by the next runs, at most
`reconcile.max_resends` times over all runs; after that it stays `missing`, its error
saying how often PracSuite did not take it, and later runs neither send it nor wait
for it (no API call at all on a night with nothing else to do).

The sandbox plays PracSuite's validation refusing an empty file (its default): S3
takes the upload, no record ever appears."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

API_KINDS = ("presign", "list", "record", "presign_url", "content")


def _api_calls(stats: dict[str, Any]) -> int:
    return sum(sum(stats["requests"][k].values()) for k in API_KINDS)


def _refusals(stats: dict[str, Any]) -> int:
    return len(stats["validation_failures"])


@pytest.mark.slow
async def test_a_file_pracsuite_never_takes_is_sent_max_resends_times_then_left_alone(
        tmp_path: Path) -> None:
    rows = make_files(tmp_path, 3, ["1"], size=1500)
    empty = tmp_path / "files" / "2" / "empty.pdf"
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    rows.append({"client_id": "2", "path": str(empty.relative_to(tmp_path)), "note": "e"})
    manifest = write_manifest(tmp_path, rows)
    nights: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    async with Sandbox(SandboxOptions(validation_delay_s=0.05)) as sb:
        cfg = config(tmp_path, sb, reconcile={"deadline_s": 3, "poll_interval_s": 0.2,
                                              "max_resends": 2})
        for _ in range(5):
            result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                                   cwd=tmp_path)
            assert "Traceback" not in result.stderr, result.stderr[-3000:]
            report = result.report(tmp_path / "reports")
            item = next(it for it in report["items"] if it["path"] == str(empty))
            nights.append((result.code, item, sb.stats()))
        status = await run_cli("status", "--config", str(cfg), "--json", cwd=tmp_path)
    # Nights 1-3: sent (once, then again twice), refused by validation each time.
    assert [_refusals(stats) for _, _, stats in nights] == [1, 2, 3, 3, 3]
    assert [code for code, _, _ in nights] == [1] * 5
    assert all(item["status"] == "missing" for _, item, _ in nights)
    assert "the next run sends it again" in str(nights[0][1]["error"])
    assert "sent 3 times" in str(nights[2][1]["error"])
    # Nights 4 and 5: neither sent nor waited for: no API call at all (the other
    # files are unchanged on disk, so skipped unread).
    for night in (3, 4):
        _, item, stats = nights[night]
        assert _api_calls(stats) == _api_calls(nights[night - 1][2]), stats["requests"]
        assert "PracSuite did not take this file: sent 3 times" in item["error"]
        assert "reconcile.max_resends = 2" in item["error"]
    assert status.code == 0
