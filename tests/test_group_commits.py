"""Group commits on real runs: fewer commits than files, and still every presigned key
kept for the next run (committed, or in the send log) before S3 receives a byte of its
upload.

The worker runs as a child process against the sandbox; its state connection is
traced (sqlite3's trace callback, installed around `State.open` in the child), so the
commits counted are the worker's own, statement by statement.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e import config, make_files, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.sandbox import s3 as sandbox_s3
from pracsuite_ingest.state import State

pytestmark = pytest.mark.slow

# The CLI, its state file's commits counted: each COMMIT, and each write made outside
# a transaction (SQLite commits those one by one). Written to argv[1] at exit.
TRACED_CLI = """
import atexit, json, sys
from pracsuite_ingest import state
from pracsuite_ingest.cli import main

counted = {"commits": 0}
plain_open = state.State.open.__func__

def traced_open(cls, path, *, lock=True):
    opened = plain_open(cls, path, lock=lock)
    conn = opened._db
    def trace(sql):
        word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if word == "COMMIT" or (word in ("INSERT", "UPDATE", "DELETE")
                                and not conn.in_transaction):
            counted["commits"] += 1
    conn.set_trace_callback(trace)
    return opened

state.State.open = classmethod(traced_open)
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(counted)))
raise SystemExit(main(sys.argv[1:]))
"""


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}


async def test_a_run_commits_its_state_fewer_times_than_it_has_files(tmp_path: Path) -> None:
    """Before, each file committed at `uploading` and again at `uploaded` (2+ commits a
    file, 250+ for these 120 files). Now an upload's key goes to the send log and the
    state commits what is pending about once a second, whatever the machine's speed:
    never more than one a file (plus one per poll and per client)."""
    files = 120
    async with Sandbox(SandboxOptions(validation_delay_s=0.1)) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, files, ["1", "2", "3"]))
        cfg = config(tmp_path, sb, reconcile={"deadline_s": 60, "poll_interval_s": 0.5})
        counts = tmp_path / "commits.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", TRACED_CLI, str(counts), "run", "--config", str(cfg),
            "--manifest", str(manifest), cwd=tmp_path, env=child_env(),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-3000:]
    commits = json.loads(counts.read_text())["commits"]
    print(f"{commits} commits for {files} files")
    assert commits < files, commits


def state_keys(path: Path) -> dict[str, str]:
    state = State.open(path)  # what the next run finds: what was committed, and the send log
    try:
        return {item.key: item.stage.value for item in state.items(state.runs()[-1]["run_id"])
                if item.key is not None}
    finally:
        state.close()


async def test_a_run_killed_as_s3_receives_an_upload_has_its_key_on_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the worker the moment the sandbox's S3 has read an upload's form (its
    presigned key), the 10th: the state file, as the next run would open it, holds
    every key S3 received, at `uploading` or later. Without that, the next run would
    not know the upload and would send the file again."""
    received: list[str] = []
    worker: dict[str, Any] = {}
    plain_receive = sandbox_s3._receive

    async def receive_then_kill(request: Any, context: Any, bucket: str) -> Any:
        outcome = await plain_receive(request, context, bucket)
        key = getattr(outcome, "key", None)
        if key is not None:
            received.append(key)
            if len(received) == 10 and "pid" in worker:
                os.kill(worker["pid"], signal.SIGKILL)
        return outcome

    monkeypatch.setattr(sandbox_s3, "_receive", receive_then_kill)
    async with Sandbox(SandboxOptions(validation_delay_s=0.2)) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 60, ["1", "2", "3"]))
        cfg = config(tmp_path, sb, upload={"concurrency": 6})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pracsuite_ingest", "run", "--config", str(cfg),
            "--manifest", str(manifest), cwd=tmp_path, env=child_env(),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        worker["pid"] = proc.pid
        await asyncio.wait_for(proc.wait(), 240)
    assert proc.returncode == -signal.SIGKILL
    on_disk = state_keys(tmp_path / "state.db")
    assert len(received) >= 10
    not_on_disk = [k for k in received if k not in on_disk]
    assert not_on_disk == [], (len(not_on_disk), len(received))
    assert {on_disk[k] for k in received} <= {"uploading", "uploaded", "validated"}
