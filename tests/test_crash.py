"""SIGKILL at many moments across presign, upload and reconcile; the next run finishes
with every row validated, exactly one PracSuite record per row, and no row lost."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

pytestmark = pytest.mark.slow

ROWS = 60
PHASES = ("presign", "upload", "reconcile")
SEEDS = range(21)  # 7 kill points in each phase


def kill_point(seed: int) -> tuple[str, int | float]:
    rng = random.Random(seed)
    phase = PHASES[seed % 3]
    if phase == "reconcile":
        return phase, rng.uniform(0.0, 0.6)  # seconds after the last upload was stored
    return phase, rng.randint(1, ROWS - 1)


@pytest.mark.parametrize("seed", SEEDS)
async def test_sigkill_then_resume_uploads_each_row_exactly_once(tmp_path: Path,
                                                                 seed: int) -> None:
    phase, at = kill_point(seed)
    opts = SandboxOptions(validation_delay_s=0.2, latency_ms=(2, 15), seed=seed)
    async with Sandbox(opts) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, ROWS, ["1", "2", "3"]))
        cfg = config(tmp_path, sb, reconcile={"deadline_s": 3, "poll_interval_s": 0.2},
                     upload={"concurrency": 6})
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pracsuite_ingest", "run", "--config", str(cfg),
            "--manifest", str(manifest), cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        while proc.returncode is None:
            s = sb.stats()
            if ((phase == "presign" and s["presigned"] >= at)
                    or (phase == "upload" and s["uploads_stored"] >= at)
                    or (phase == "reconcile" and s["uploads_stored"] >= ROWS)):
                break
            await asyncio.sleep(0.003)
        if phase == "reconcile":
            await asyncio.sleep(float(at))
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        stages = Counter(r[0] for r in sqlite3.connect(tmp_path / "state.db").execute(
            "SELECT stage FROM items"))
        resumed = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                                cwd=tmp_path)
        stats = sb.stats()
    assert resumed.code == 0, (phase, at, dict(stages), resumed.stderr[-3000:])
    report = resumed.report(tmp_path / "reports")
    assert report["summary"]["total"] == ROWS
    assert {it["status"] for it in report["items"]} <= {"validated", "skipped"}
    # exactly one record per row, each from one upload, and no object stored twice
    assert stats["records_created_total"] == ROWS, (phase, at, dict(stages))
    per_key = Counter(r["key"] for c in stats["records_created"].values()
                      for r in c["records"])
    assert max(per_key.values()) == 1
    assert len({it["attachment_id"] for it in report["items"]}) == ROWS
    print(f"seed {seed}: killed in {phase} at {at}; stages then {dict(stages)}; "
          f"uploads stored {stats['uploads_stored']}")
