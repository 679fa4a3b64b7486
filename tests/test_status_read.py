"""`status` tells the truth about a state file a run is writing or a killed run left:
uploads begun since the last commit (the send log) are counted, a run whose process is
gone is `interrupted`, and `status` itself writes nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
from pathlib import Path

from e2e import run_cli
from pracsuite_ingest import send_log
from pracsuite_ingest.state import State
from pracsuite_ingest.status_read import lock_held, with_sends

RUNS = [{"run_id": "r", "started_at": "t", "finished_at": None, "outcome": "running",
         "stages": {"seen": 3, "validated": 1}}]

KILLED_MID_UPLOAD = r"""
import os, signal, sys
from pathlib import Path
from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.state import State

state = State.open(Path(sys.argv[1]))
state.new_run("r", "2026-12-05T01:00:00Z")
items = []
for seq in range(1, 5):
    row = Row(seq, "7", f"/f/{seq}.pdf", f"{seq}.pdf")
    items.append(state.add_item("r", seq, row, LocalFile(row, Path(row.path), 1,
                                f"{seq:064x}"), Stage.SEEN, snapshot_run="r"))
state.commit()  # four items `seen`, committed
for item in items[:2]:  # two uploads begin: in the send log, not committed
    state.set_stage(item, Stage.PRESIGNED, key=f"temp/{item}")
    state.start_upload(item, 1, new_key=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_item_the_log_holds_with_more_sends_counts_at_its_logged_stage() -> None:
    shown = with_sends(RUNS, {1: ("r", "uploading", 1), 2: ("r", "uploading", 1)},
                       {1: ("r", "seen", 0), 2: ("r", "validated", 1)}, alive=True)
    # item 1 moved from seen; item 2 was committed since (as many sends): left as filed
    assert shown[0]["stages"] == {"seen": 2, "uploading": 1, "validated": 1}
    assert shown[0]["outcome"] == "running"
    assert RUNS[0]["stages"] == {"seen": 3, "validated": 1}  # the input is not changed


def test_an_item_the_file_lacks_counts_and_a_foreign_run_is_ignored() -> None:
    shown = with_sends(RUNS, {9: ("r", "uploading", 1), 10: ("other", "uploading", 1)},
                       {}, alive=True)
    assert shown[0]["stages"] == {"seen": 3, "validated": 1, "uploading": 1}


def test_a_running_run_without_a_live_process_is_shown_interrupted() -> None:
    assert with_sends(RUNS, {}, {}, alive=False)[0]["outcome"] == "interrupted"


def test_the_lock_is_seen_held_while_a_run_holds_it_and_free_after(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    assert not lock_held(path)  # no lock file: nothing ever ran
    state = State.open(path)
    try:
        assert lock_held(path)
    finally:
        state.close()
    assert not lock_held(path)
    State.open(path).close()  # asking did not keep the lock from the next run


async def test_status_after_a_kill_mid_upload_counts_the_send_log_and_writes_nothing(
        tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_MID_UPLOAD, str(path), stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == -signal.SIGKILL, err.decode()
    log_before = send_log.path_of(path).read_bytes()
    assert len(send_log.rows_of(send_log.path_of(path))) == 2  # two uploads logged

    status = await run_cli("status", "--state", str(path), "--json", cwd=tmp_path)
    assert status.code == 0, status.stderr[-2000:]
    run = json.loads(status.stdout)["runs"][0]
    assert run["outcome"] == "interrupted"
    assert run["stages"] == {"seen": 2, "uploading": 2}

    # status wrote nothing: the log is as the kill left it, the file still says running
    assert send_log.path_of(path).read_bytes() == log_before
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT outcome FROM runs").fetchall() == [("running",)]
        assert con.execute("SELECT stage, count(*) FROM items GROUP BY stage"
                           ).fetchall() == [("seen", 4)]
    finally:
        con.close()
