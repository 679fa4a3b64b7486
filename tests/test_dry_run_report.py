"""A dry run writes `<run_id>.*` and `dry-run.*`, never `latest.*`; `reconcile` with no
run id takes the latest real run, not a dry run after it (SPEC, Report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

pytestmark = pytest.mark.slow


async def test_a_dry_run_leaves_latest_to_the_real_run(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    async with Sandbox(SandboxOptions(validation_delay_s=0.05)) as sb:
        rows = make_files(tmp_path, 3, ["31"])
        cfg = config(tmp_path, sb)
        real = await run_cli("run", "--config", str(cfg), "--manifest",
                             str(write_manifest(tmp_path, rows)), cwd=tmp_path)
        assert real.code == 0, real.stderr[-2000:]
        latest = {ext: (reports / f"latest.{ext}").read_bytes() for ext in ("json", "csv", "html")}
        real_id = json.loads(latest["json"])["run_id"]
        more = make_files(tmp_path / "more", 2, ["32"])
        for r in more:
            r["path"] = str(tmp_path / "more" / r["path"])
        dry = await run_cli("run", "--config", str(cfg), "--dry-run", "--manifest",
                            str(write_manifest(tmp_path, rows + more)), cwd=tmp_path)
        assert dry.code == 0, dry.stderr[-2000:]
        for ext, before in latest.items():
            assert (reports / f"latest.{ext}").read_bytes() == before, ext
        plan = json.loads((reports / "dry-run.json").read_text())
        assert plan["run_id"] != real_id
        assert (reports / f"{plan['run_id']}.json").read_bytes() == (
            reports / "dry-run.json").read_bytes()
        assert (reports / "dry-run.csv").exists() and (reports / "dry-run.html").exists()
        assert plan["summary"] == {**plan["summary"], "skipped": 3, "pending": 2}
        again = await run_cli("reconcile", "--config", str(cfg), cwd=tmp_path)
    assert again.code == 0, again.stderr[-2000:]
    assert f"run {real_id}:" in again.stdout
    assert json.loads((reports / "latest.json").read_text())["run_id"] == real_id
