"""The send log: an upload's key is kept for the next run once `State.start_upload`
returns, with no commit of the state file; the next lock holder replays it, and never
takes a state back to an earlier stage.

Each case runs in a child process that SIGKILLs itself, as a crash would leave things;
the parent then opens the state file as the next run does.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pracsuite_ingest import send_log
from pracsuite_ingest.errors import StateUnusable
from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.state import State

PRELUDE = r"""
import os, shutil, signal, sys
from pathlib import Path
from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.state import State

path = Path(sys.argv[1])
state = State.open(path)
state.new_run("r", "t")

def new_item(seq):
    row = Row(seq, "7", f"/f/{seq}.pdf", f"{seq} naïve.pdf")
    return state.add_item("r", seq, row, LocalFile(row, Path(row.path), 1, f"{seq:064x}"),
                          Stage.SEEN, snapshot_run="r")

def die():
    os.kill(os.getpid(), signal.SIGKILL)
"""


def run_then_die(path: Path, body: str) -> None:
    child = subprocess.run([sys.executable, "-c", PRELUDE + body, str(path)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr


def committed(path: Path) -> dict[int, tuple[str, str | None]]:
    con = sqlite3.connect(path)
    try:
        return {i: (s, k) for i, s, k in con.execute("SELECT id, stage, key FROM items")}
    finally:
        con.close()


def next_run_finds(path: Path) -> dict[int, tuple[str, str | None, int, int]]:
    """(stage, key, attempts, sends) of each item, as the next run opens the state."""
    State.open(path).close()  # the next lock holder replays the send log
    con = sqlite3.connect(path)
    try:
        return {i: (s, k, a, n) for i, s, k, a, n in
                con.execute("SELECT id, stage, key, attempts, sends FROM items")}
    finally:
        con.close()


def test_an_upload_started_and_never_committed_is_found_uploading_with_its_key(
        tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    run_then_die(path, """
a, b = new_item(1), new_item(2)
state.set_stage(a, Stage.PRESIGNED, key="temp/a")
state.start_upload(a, 1, new_key=True)
state.set_stage(b, Stage.PRESIGNED, key="temp/b")  # waited for a slot: never sent
die()
""")
    assert committed(path) == {}  # the rows themselves were never committed
    found = next_run_finds(path)
    assert found == {1: ("uploading", "temp/a", 1, 1)}  # b was never sent: nothing to find
    assert send_log.path_of(path).stat().st_size == 0  # replayed, committed, emptied


def test_a_resend_after_a_commit_is_found_with_its_new_key_and_both_sends(
        tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    run_then_die(path, """
a = new_item(1)
state.set_stage(a, Stage.PRESIGNED, key="temp/a1")
state.start_upload(a, 1, new_key=True)
state.set_stage(a, Stage.UPLOADED)
state.set_stage(a, Stage.MISSING, error="no record")
state.commit()
state.set_stage(a, Stage.PRESIGNED, key="temp/a2")  # sent again with a new key
state.start_upload(a, 2, new_key=True)
die()
""")
    assert committed(path) == {1: ("missing", "temp/a1")}
    assert next_run_finds(path) == {1: ("uploading", "temp/a2", 2, 2)}


def test_a_kill_between_a_commit_and_the_log_emptied_takes_nothing_back(
        tmp_path: Path) -> None:
    # The log's rows are older than what the state file committed: replaying them
    # must not move a validated item back to `uploading` (and upload it again).
    path = tmp_path / "s.db"
    run_then_die(path, """
a = new_item(1)
state.set_stage(a, Stage.PRESIGNED, key="temp/a")
state.start_upload(a, 1, new_key=True)
kept = Path(f"{path}.sends").read_bytes()
state.set_stage(a, Stage.UPLOADED)
state.set_stage(a, Stage.VALIDATED, attachment_id="9")
state.commit()
with open(f"{path}.sends", "ab") as log:  # as if the kill came before the log was emptied
    log.write(kept)
die()
""")
    assert next_run_finds(path) == {1: ("validated", "temp/a", 1, 1)}


def test_the_log_names_its_columns_once_then_writes_each_rows_values(
        tmp_path: Path) -> None:
    """Named in every line, the columns were a third of the log's bytes (0.6 KB a 1 KB
    file): a header line names them, after each time the log is emptied."""
    path = tmp_path / "s.db"
    state = State.open(path)
    try:
        state.new_run("r", "t")
        ids = []
        for seq in (1, 2, 3):
            row = Row(seq, "7", f"/f/{seq}.pdf", f"{seq}.pdf")
            item = state.add_item("r", seq, row, LocalFile(row, Path(row.path), 1,
                                                             f"{seq:064x}"), Stage.SEEN)
            state.set_stage(item, Stage.PRESIGNED, key=f"temp/{seq}")
            state.start_upload(item, 1, new_key=True)
            ids.append(item)
        lines = send_log.path_of(path).read_text().splitlines()
        assert len(lines) == 4 and '"columns"' in lines[0] and '"key"' in lines[0]
        assert all(line.startswith("[") and '"key"' not in line for line in lines[1:])
        assert [r["key"] for r in send_log.rows_of(send_log.path_of(path))] == [
            "temp/1", "temp/2", "temp/3"]
        state.commit()  # the log is emptied: the next row comes with its header again
        state.set_stage(ids[0], Stage.UPLOADED)
        state.set_stage(ids[0], Stage.MISSING, error="no record")
        state.set_stage(ids[0], Stage.PRESIGNED, key="temp/1b")
        state.start_upload(ids[0], 2, new_key=True)
        lines = send_log.path_of(path).read_text().splitlines()
        assert len(lines) == 2 and '"columns"' in lines[0], lines
    finally:
        state.close()


def test_a_log_an_earlier_version_wrote_a_row_a_dict_is_replayed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    run_then_die(path, """
import json
from pracsuite_ingest import send_log
a = new_item(1)
state.set_stage(a, Stage.PRESIGNED, key="temp/a")
state.start_upload(a, 1, new_key=True)
rows = send_log.rows_of(send_log.path_of(path))
send_log.path_of(path).write_text("".join(json.dumps(r) + "\\n" for r in rows))
die()
""")
    assert '"columns"' not in send_log.path_of(path).read_text()
    assert next_run_finds(path) == {1: ("uploading", "temp/a", 1, 1)}


def test_a_line_torn_by_a_kill_is_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    run_then_die(path, """
a = new_item(1)
state.set_stage(a, Stage.PRESIGNED, key="temp/a")
state.start_upload(a, 1, new_key=True)
with open(f"{path}.sends", "ab") as log:
    log.write(b'{"id": 2, "run_id": "r", "se')  # its upload never started
die()
""")
    assert next_run_finds(path) == {1: ("uploading", "temp/a", 1, 1)}


def test_a_reader_without_the_lock_leaves_the_log_alone(tmp_path: Path) -> None:
    # `status` opens without the lock while a run may be going: the log is the run's.
    path = tmp_path / "s.db"
    run_then_die(path, """
a = new_item(1)
state.set_stage(a, Stage.PRESIGNED, key="temp/a")
state.start_upload(a, 1, new_key=True)
die()
""")
    size = send_log.path_of(path).stat().st_size
    reader = State.open(path, lock=False)
    reader.close()
    assert send_log.path_of(path).stat().st_size == size > 0
    assert next_run_finds(path)[1][0] == Stage.UPLOADING.value


def test_writes_rolled_back_by_sqlite_on_its_own_break_the_state_and_keep_the_log(
        tmp_path: Path) -> None:
    # SQLite may roll a transaction back by itself (a full disk or an I/O error met by a
    # read). A later commit that said "done" would empty the send log of a key whose
    # upload began: the state refuses every later write and commit instead.
    path = tmp_path / "s.db"
    state = State.open(path)
    state.new_run("r", "t")
    row = Row(1, "7", "/f/1.pdf", "1.pdf")
    item = state.add_item("r", 1, row, LocalFile(row, Path(row.path), 1, "0" * 64),
                          Stage.SEEN, snapshot_run="r")
    state.set_stage(item, Stage.PRESIGNED, key="temp/a")
    state.start_upload(item, 1, new_key=True)
    state._db.execute("ROLLBACK")  # what SQLite does on its own in those cases
    for act in (state.commit, lambda: state.set_stage(item, Stage.UPLOADED)):
        with pytest.raises(StateUnusable):
            act()
    assert send_log.path_of(path).stat().st_size > 0  # the key is still there
    state.close()
    assert next_run_finds(path) == {1: ("uploading", "temp/a", 1, 1)}


def test_a_send_log_that_cannot_be_written_stops_the_upload_and_counts_no_send(
        tmp_path: Path) -> None:
    # A full disk at the log: the upload must not start, and its pending move to
    # `uploading` (a send counted) must never be committed, or the next run would wait a
    # deadline for it and count it against max_resends.
    path = tmp_path / "s.db"
    run_then_die(path, r"""
import resource
a = new_item(1)
state.set_stage(a, Stage.PRESIGNED, key="temp/a")
state.commit()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))  # the log cannot grow
from pracsuite_ingest.errors import StateUnusable
try:
    state.start_upload(a, 1, new_key=True)
except StateUnusable:
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    state.close()  # as the run ends: commits nothing more
    die()
""")
    assert next_run_finds(path) == {1: ("presigned", "temp/a", 0, 0)}
