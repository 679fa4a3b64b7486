"""`reconcile` commits its claims as it makes them (within `COMMIT_EVERY_S`), not only
when it ends: `status` and a kill see them while it still waits for other records."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

pytestmark = pytest.mark.slow


def validated(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM items WHERE stage = 'validated'"
                               ).fetchone()[0])
    finally:
        con.close()


async def test_reconcile_commits_its_claims_while_it_still_waits(tmp_path: Path) -> None:
    options = SandboxOptions(validation_delay_s=2.0, reject_names="never")
    async with Sandbox(options) as sb:
        rows = make_files(tmp_path, 3, ["1"], names=["letter.pdf", "scan.pdf", "never.pdf"])
        manifest = write_manifest(tmp_path, rows)
        # the run stops waiting before any record appears: every upload is left awaiting
        cfg = config(tmp_path, sb, reconcile={"deadline_s": 0.2, "poll_interval_s": 0.1,
                                              "max_resends": 3})
        first = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                              cwd=tmp_path)
        assert first.code == 1, first.stderr[-2000:]
        state = tmp_path / "state.db"
        assert validated(state) == 0
        # all three were sent: `never.pdf` is refused only by PracSuite's validation
        statuses = [item["status"] for item in first.report(tmp_path / "reports")["items"]]
        assert statuses == ["missing"] * 3, statuses

        env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
        env.update({"PRACSUITE_INGEST_RECONCILE__DEADLINE_S": "60",
                    "PRACSUITE_INGEST_RECONCILE__POLL_INTERVAL_S": "0.3"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pracsuite_ingest", "reconcile", "--config", str(cfg),
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        try:
            # the two records appear within seconds; `never.pdf`'s never does, so the
            # command waits out its 60 s deadline: its claims must be committed before
            while proc.returncode is None and validated(state) < 2:
                await asyncio.wait([asyncio.ensure_future(proc.wait())], timeout=0.2)
            if proc.returncode is not None:
                _, err = await proc.communicate()
                raise AssertionError("reconcile ended before its claims were seen: "
                                     + err.decode()[-3000:])
            assert validated(state) == 2
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), 60)
