"""Presigns run ahead of busy upload slots, a few files at most, and a stop leaves the
files presigned but not yet sent `pending`, sent once by the next run (in process); a
kill leaves them the same (a child process that SIGKILLs itself)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from e2e import make_files, write_manifest
from pracsuite_ingest.connection import make_client, make_session
from pracsuite_ingest.models import Stage
from pracsuite_ingest.pipeline import Run
from pracsuite_ingest.report import status_of
from pracsuite_ingest.run_events import NOT_SENT
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.settings import Settings, load_settings
from pracsuite_ingest.state import State

# One upload slot and two presigns in flight: presigning keeps ahead of uploading, so
# presigned files queue for the slot (the sandbox's latency is on its API and its S3).
UPLOAD = {"concurrency": 1, "presign_concurrency": 2, "grace_s": 5}


def settings_dict(sb: Sandbox, root: Path, manifest: Path) -> dict[str, Any]:
    return {
        "api": {"base_url": sb.base_url, "vendor_api_key": sb.vendor_key,
                "practice_api_key": sb.practice_key, "requests_per_second": 500.0},
        "input": {"manifest": str(manifest)}, "upload": UPLOAD,
        "reconcile": {"deadline_s": 15, "poll_interval_s": 0.1},
        "state": {"path": str(root / "state.db")}, "report": {"dir": str(root / "reports")},
    }


def settings_for(sb: Sandbox, root: Path, manifest: Path) -> Settings:
    return load_settings(None, settings_dict(sb, root, manifest))


def most_presigned_at_once(db: Path) -> int:
    """The most items at once presigned and not yet uploaded, replaying the state file's
    transitions in the order they were written: `presigned` (waiting for the slot), or
    `uploading` (the one in the slot)."""
    con = sqlite3.connect(db)
    try:
        moves = con.execute("SELECT item_id, stage FROM transitions ORDER BY rowid").fetchall()
    finally:
        con.close()
    stage: dict[int, str] = {}
    most = 0
    for item, now in moves:
        stage[item] = now
        most = max(most, sum(1 for s in stage.values() if s in ("presigned", "uploading")))
    return most


def new_run(settings: Settings, state: State, session: object, run_id: str) -> Run:
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    state.new_run(run_id, "2026-11-30T00:00:00Z")
    return Run(settings, state, make_client(settings, session), session, dry_run=False,
               shutdown=asyncio.Event(), run_id=run_id)


async def test_presigns_run_ahead_of_busy_upload_slots_never_more_than_the_lookahead(
        tmp_path: Path) -> None:
    rows = 16
    opts = SandboxOptions(validation_delay_s=0.05, latency_ms=(10, 15), seed=5)
    async with Sandbox(opts) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, rows, ["1", "2"]))
        settings = settings_for(sb, tmp_path, manifest)
        state = State.open(tmp_path / "state.db")
        async with make_session(settings) as session:
            run = new_run(settings, state, session, "run-1")
            await run.execute()
        items = list(state.items("run-1"))
        state.close()
        stats = sb.stats()
        order = [(x.method, x.path.split("/")[3]) for x in sb.api_requests
                 if x.path.endswith("/patient_attachment")]
    # from the state file: with one upload slot and no lookahead, one presigned file
    # at a time; with it, more, never above the slot's plus the lookahead
    # (2 x presign_concurrency)
    assert 1 + 2 <= most_presigned_at_once(tmp_path / "state.db") <= 1 + 4
    assert 0 < run.ahead.ready_peak <= run.ahead.lookahead == 4  # the run's own count
    assert run.ahead.waited > 0
    assert [i.stage for i in items] == [Stage.VALIDATED] * rows
    assert stats["uploads_stored"] == stats["records_created_total"] == rows
    for client in ("1", "2"):  # each client's snapshot before its first presign
        assert order.index(("GET", client)) < order.index(("POST", client))


async def test_a_stop_leaves_presigned_files_unsent_and_the_next_run_sends_each_once(
        tmp_path: Path) -> None:
    rows = 14
    opts = SandboxOptions(validation_delay_s=0.05, latency_ms=(20, 30), seed=6)
    async with Sandbox(opts) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, rows, ["3"]))
        settings = settings_for(sb, tmp_path, manifest)
        state = State.open(tmp_path / "state.db")
        async with make_session(settings) as session:
            first = new_run(settings, state, session, "run-1")
            intake = asyncio.create_task(first.upload_all())

            async def two_wait_presigned() -> None:
                while first.ahead.ready < 2:
                    assert not intake.done(), "the run ended before two files waited"
                    await asyncio.sleep(0.005)

            await asyncio.wait_for(two_wait_presigned(), 60)  # a guard, not a measure
            first.shutdown.set()
            assert await intake is False
            stored_after_first = sb.stats()["uploads_stored"]
            stopped = list(state.items("run-1"))
            second = new_run(settings, state, session, "run-2")
            await second.execute()
        again = list(state.items("run-2"))
        state.close()
        stats = sb.stats()
    # every row one item; those presigned but never sent are pending, and say why
    assert sorted(i.seq for i in stopped) == list(range(1, rows + 1))
    presigned = [i for i in stopped if i.stage is Stage.PRESIGNED]
    assert len(presigned) >= 2
    assert all(i.error == NOT_SENT and status_of(i.stage) == "pending" for i in presigned)
    uploaded = [i for i in stopped if i.stage is Stage.UPLOADED]
    assert stored_after_first == len(uploaded) < rows
    # the next run sends what was not sent, once: one upload and one record per row
    assert [i.stage for i in again] == [Stage.VALIDATED] * rows
    assert stats["uploads_stored"] == stats["records_created_total"] == rows
    per_name = Counter(r["file_name"] for r in stats["records_created"]["3"]["records"])
    assert set(per_name.values()) == {1} and len(per_name) == rows


# A run in a child process, SIGKILLed by itself while two presigned files wait for the
# slot, after two more uploads (each the old code's commit of the files waiting).
KILLED_WHILE_WAITING = r"""
import asyncio, json, os, signal, sys
from pathlib import Path
from pracsuite_ingest.connection import make_client, make_session
from pracsuite_ingest.pipeline import Run
from pracsuite_ingest.settings import load_settings
from pracsuite_ingest.state import State

async def main():
    settings = load_settings(None, json.loads(sys.argv[1]))
    state = State.open(Path(settings.state.path))
    state.new_run("run-1", "2026-11-30T00:00:00Z")
    async with make_session(settings) as session:
        run = Run(settings, state, make_client(settings, session), session, dry_run=False,
                  shutdown=asyncio.Event(), run_id="run-1")
        intake = asyncio.create_task(run.upload_all())
        uploaded = lambda: run.counters.by_stage.get("uploaded", 0)
        while run.ahead.ready < 2:
            assert not intake.done(), "the run ended before two files waited"
            await asyncio.sleep(0.005)
        # two more uploads began and ended while files waited: the state was written
        # (committed, before) with them waiting
        until = uploaded() + 2
        while uploaded() < until or run.ahead.ready < 2:
            assert not intake.done(), "the run ended before two files waited"
            await asyncio.sleep(0.001)
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_a_kill_while_files_wait_for_a_slot_leaves_them_unsent_and_counted_once(
        tmp_path: Path) -> None:
    # Before, a file presigned ahead moved to `uploading` with its key while it waited:
    # killed then, the next run took it for an upload that may have reached S3 (a
    # deadline's wait) and counted its unused key as a send against max_resends.
    rows = 14
    opts = SandboxOptions(validation_delay_s=0.05, latency_ms=(20, 30), seed=6)
    async with Sandbox(opts) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, rows, ["3"]))
        # the upload cut in the slot may have reached S3: the next run waits a deadline
        # for it (3 s: 60 times the records' delay) before sending it again
        wanted = settings_dict(sb, tmp_path, manifest)
        wanted["reconcile"]["deadline_s"] = 3
        settings = load_settings(None, wanted)
        blob = json.dumps(wanted)
        child = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", KILLED_WHILE_WAITING, blob],
            capture_output=True, text=True, timeout=120, check=False)
        assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
        stored_by_first = sb.stats()["uploads_stored"]
        state = State.open(tmp_path / "state.db")  # the next run: the send log replayed
        first = {i.seq: i for i in state.items("run-1")}
        async with make_session(settings) as session:
            second = new_run(settings, state, session, "run-2")
            await second.execute()
        again = list(state.items("run-2"))
        sends = {i.file_name: state.sends_of(i.client_id, i.file_name, i.sha256 or "")
                 for i in again}
        state.close()
        stats = sb.stats()
    # what the next run finds sent (to reconcile, not send again) is what S3 received and
    # the one upload in the slot; the two or more files that waited for the slot are not
    # among them (`presigned`, or `seen` as last committed)
    sent = [i for i in first.values() if i.stage in (Stage.UPLOADING, Stage.UPLOADED)]
    assert stored_by_first <= len(sent) <= stored_by_first + UPLOAD["concurrency"], (
        stored_by_first, {s: i.stage for s, i in first.items()})
    # it sends each of the others once: one upload and one record per row; a file that
    # waited for the slot counts one send in all (the one in the slot may count two)
    assert [i.stage for i in again] == [Stage.VALIDATED] * rows
    assert stats["uploads_stored"] == stats["records_created_total"] == rows
    not_sent = set(sends) - {i.file_name for i in sent}
    assert len(not_sent) >= 2 and {sends[n] for n in not_sent} == {1}, sends
