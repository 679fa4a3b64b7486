"""The dry run's plan says how many API calls the migration needs and how long they take
at the configured rate, or at the rate "auto" learned in an earlier run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from e2e import make_files, run_cli, write_manifest
from pracsuite_ingest.plan import PlannedRate, api_need, plan_text, planned_rate
from pracsuite_ingest.settings import Settings


def test_the_calls_are_a_presign_and_a_look_up_per_file_and_two_list_reads_per_patient(
        ) -> None:
    assert api_need(1000, 0, 100) == 2200
    assert api_need(0, 50, 10) == 70  # reconciled files are looked up, not presigned


def test_the_plan_gives_the_calls_and_the_hours_at_the_rate() -> None:
    items = [{"client_id": str(i % 50), "path": f"f{i}", "file_name": f"f{i}.pdf",
              "status": "pending", "error": None, "size": 1000} for i in range(10_000)]
    doc = {"run_id": "r", "summary": {}, "items": items}
    text = plan_text(doc, 0, PlannedRate(3.0, "api.requests_per_second"))
    # 20,000 for the files and 100 list reads for 50 patients: 6,700 s at 3/s
    assert "API calls  about 20,100; at 3.00 requests/s (api.requests_per_second) they " \
           "take at least 1 h 51 min (1.9 h)" in text, text


def settings(tmp_path: Path, **api: Any) -> Settings:
    return Settings.model_validate({"api": api, "report": {"dir": str(tmp_path / "r")}})


def test_the_rate_is_the_configured_one_else_the_learned_one_else_where_auto_starts(
        tmp_path: Path) -> None:
    assert planned_rate(settings(tmp_path, requests_per_second=8.0)).requests_per_second == 8
    auto = settings(tmp_path, requests_per_second="auto")
    assert planned_rate(auto).requests_per_second == 3.0
    (tmp_path / "r").mkdir()
    for run_id, pace in (("2026-01-01T00-00-00Z-aaaa", {"mode": "auto",
                                                        "requests_per_second": 7.5}),
                         ("2026-01-02T00-00-00Z-bbbb", None)):  # a dry run: no pace
        doc = {"run_id": run_id, **({"api": pace} if pace else {})}
        (tmp_path / "r" / f"{run_id}.json").write_text(json.dumps(doc))
    learned = planned_rate(auto)
    assert learned.requests_per_second == 7.5
    assert "2026-01-01T00-00-00Z-aaaa" in learned.source


async def test_a_dry_run_prints_the_calls_and_hours_the_migration_needs(
        tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, make_files(tmp_path, 30, ["1", "2", "3"]))
    result = await run_cli("run", "--dry-run", "--manifest", str(manifest), "--state",
                           str(tmp_path / "s.db"), "--report-dir", str(tmp_path / "r"),
                           "--log-format", "json", cwd=tmp_path)
    assert result.code == 0, result.stderr[-2000:]
    # 30 presigns, 30 look-ups, 6 list reads at the default 3/s: 22 s
    assert re.search(r"API calls\s+about 66; at 3\.00 requests/s \(api\.requests_per_second\)"
                     r" they take at least 22 s", result.stdout), result.stdout
