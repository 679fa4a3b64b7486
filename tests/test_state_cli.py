"""The state file from the outside: reconcile later, status, one run at a time, disk trouble."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

pytestmark = pytest.mark.slow


async def test_reconcile_later_finds_what_a_slow_practice_validated(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=2.5)) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 8, ["1"]))
        cfg = config(tmp_path, sb, reconcile={"deadline_s": 0.5, "poll_interval_s": 0.2})
        first = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                              cwd=tmp_path)
        missing = first.report(tmp_path / "reports")
        await asyncio.sleep(2.5)
        later = await run_cli("reconcile", "--config", str(cfg), cwd=tmp_path)
        presigns = sb.stats()["presigned"]
    assert first.code == 1
    assert missing["summary"]["missing"] == 8
    assert "reconcile" in missing["items"][0]["error"]
    assert later.code == 0, later.stderr[-2000:]
    again = later.report(tmp_path / "reports")
    assert again["run_id"] == missing["run_id"]  # the same run's report, rewritten
    assert again["summary"]["validated"] == 8
    assert presigns == 8  # reconcile sends nothing
    status = await run_cli("status", "--config", str(cfg), "--json", cwd=tmp_path)
    assert status.code == 0
    runs = json.loads(status.stdout)["runs"]
    assert runs[0]["stages"] == {"validated": 8}


async def test_a_second_run_on_the_same_state_file_is_refused(tmp_path: Path) -> None:
    # 300-400 ms a request, 2 uploads at a time: the first run takes 5 s or more, time
    # for the second to start on a loaded machine (CI saw it finish first at 100-200 ms).
    async with Sandbox(SandboxOptions(latency_ms=(300, 400))) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 30, ["2"]))
        cfg = config(tmp_path, sb, upload={"concurrency": 2})
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
        first = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pracsuite_ingest", "run", "--config", str(cfg),
            "--manifest", str(manifest), cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        while sb.stats()["presigned"] < 1:  # noqa: ASYNC110 - polling another program
            await asyncio.sleep(0.02)
        second = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        await first.wait()
        stats = sb.stats()
    assert second.code == 3
    assert "another pracsuite-ingest run is using the state file" in second.stderr
    assert first.returncode == 0
    assert stats["records_created_total"] == 30


async def test_an_unusable_state_file_exits_3_and_sends_nothing(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions()) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 3, ["3"]))
        (tmp_path / "not-a-folder").write_text("x")
        cfg = config(tmp_path, sb, state={"path": str(tmp_path / "not-a-folder" / "s.db")})
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        stats = sb.stats()
    assert result.code == 3
    assert "state file" in result.stderr and "unusable" in result.stderr
    assert stats["presigned"] == 0
