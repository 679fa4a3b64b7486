"""When the state file commits: at a refusal, at each poll; otherwise in batches (an
upload's key is kept by the send log, tests/test_send_log.py).

Another process (a second connection here) sees only what is committed; a crash loses
only what it does not see, so these tests read through a second connection.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pracsuite_ingest import send_log, state_commits
from pracsuite_ingest import state as state_mod
from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.state import State
from pracsuite_ingest.state_commits import GroupCommits


def seen_by_another_process(path: Path) -> dict[int, tuple[str, str | None]]:
    con = sqlite3.connect(path)
    try:
        return {i: (stage, key) for i, stage, key in
                con.execute("SELECT id, stage, key FROM items").fetchall()}
    finally:
        con.close()


def new_item(state: State, seq: int) -> int:
    row = Row(seq, "7", f"/f/{seq}.pdf", f"{seq}.pdf")
    return state.add_item("r", seq, row, LocalFile(row, Path(row.path), 1, f"{seq:064x}"),
                          Stage.SEEN, snapshot_run="r")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[State, Path]]:
    path = tmp_path / "s.db"
    state = State.open(path)
    state.new_run("r", "t")
    yield state, path
    state.close()


async def test_a_run_commits_every_interval_and_at_close_not_per_upload(
        db: tuple[State, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten uploads start (their keys go to the send log): no commit; the committer's
    timer commits them all at once, and the log is emptied then."""
    state, path = db
    monkeypatch.setattr(state_commits, "COMMIT_EVERY_S", 0.05)
    commits = GroupCommits(state)
    commits.start()
    items = [new_item(state, seq) for seq in range(1, 11)]
    for item in items:
        state.set_stage(item, Stage.PRESIGNED, key=f"temp/{item}")
        state.start_upload(item, 1, new_key=True)
    assert seen_by_another_process(path) == {}  # kept by the send log, not committed
    assert send_log.path_of(path).stat().st_size > 0
    await asyncio.sleep(0.2)
    assert commits.commits == 1
    assert seen_by_another_process(path) == {i: ("uploading", f"temp/{i}") for i in items}
    assert send_log.path_of(path).stat().st_size == 0
    commits.close()


def test_a_refusal_is_on_disk_at_once_and_uploaded_rides_along(
        db: tuple[State, Path]) -> None:
    # A lost `uploaded` leaves `uploading` with its key: the next run reconciles it, as
    # it would have reconciled `uploaded`. A lost refusal would make the next run wait
    # a deadline for a record that cannot come: it is committed at once (and rare).
    state, path = db
    accepted, refused = new_item(state, 1), new_item(state, 2)
    for item in (accepted, refused):
        state.set_stage(item, Stage.PRESIGNED, key=f"temp/{item}")
        state.set_stage(item, Stage.UPLOADING)
    state.commit()
    state.set_stage(accepted, Stage.UPLOADED)
    assert seen_by_another_process(path)[accepted][0] == "uploading"
    state.set_stage(refused, Stage.FAILED, error="403 AccessDenied")
    seen = seen_by_another_process(path)
    assert (seen[accepted][0], seen[refused][0]) == ("uploaded", "failed")


def test_a_polls_findings_wait_for_its_commit(db: tuple[State, Path]) -> None:
    state, path = db
    item = new_item(state, 1)
    for stage in (Stage.PRESIGNED, Stage.UPLOADING, Stage.UPLOADED):
        state.set_stage(item, stage, key="temp/1")
    state.commit()
    state.set_stage(item, Stage.VALIDATED, attachment_id="9")
    assert seen_by_another_process(path)[item][0] == "uploaded"
    state.commit()  # as reconcile/reconciler.py does after each poll
    assert seen_by_another_process(path)[item][0] == "validated"


def test_close_commits_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    state = State.open(path)
    state.new_run("r", "t")
    item = new_item(state, 1)
    state.close()
    assert seen_by_another_process(path) == {item: ("seen", None)}


def test_a_pending_write_is_committed_within_the_interval(
        db: tuple[State, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    state, path = db
    monkeypatch.setattr(state_mod, "COMMIT_EVERY_S", 0.0)
    item = new_item(state, 1)
    assert seen_by_another_process(path) == {item: ("seen", None)}


def test_a_rolled_back_snapshot_keeps_the_writes_pending_before_it(
        db: tuple[State, Path]) -> None:
    state, path = db
    item = new_item(state, 1)

    def records() -> Iterator[str]:
        yield "a"
        raise RuntimeError("listing broke")

    with pytest.raises(RuntimeError):
        state.save_snapshot("r", "7", records())
    assert state.snapshot("r", "7") is None  # all of the snapshot or none of it
    assert seen_by_another_process(path) == {item: ("seen", None)}


def test_a_run_found_running_by_the_next_lock_holder_is_marked_interrupted(
        tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    dies = ("import os, signal, sys\n"
            "from pathlib import Path\n"
            "from pracsuite_ingest.state import State\n"
            "State.open(Path(sys.argv[1])).new_run('dead', '2026-11-30T00:00:00Z')\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    child = subprocess.run([sys.executable, "-c", dies, str(path)], check=False)
    assert child.returncode == -signal.SIGKILL
    reader = State.open(path, lock=False)  # without the lock the file says running
    assert reader.runs()[0]["outcome"] == "running"
    reader.close()
    state = State.open(path)  # the next run or `reconcile`: the lock is free
    state.new_run("next", "2026-11-30T00:01:00Z")
    outcomes = {r["run_id"]: r["outcome"] for r in state.runs()}
    state.close()
    assert outcomes == {"dead": "interrupted", "next": "running"}


LOSE_PENDING = r"""
import resource, signal, sys
from pathlib import Path
from pracsuite_ingest.errors import StateUnusable
from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.state import State

path = Path(sys.argv[1])
state = State.open(path)
state.new_run("r", "t")
state.commit()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit = max(path.stat().st_size, Path(f"{path}-wal").stat().st_size) + 4096
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:  # pending writes (seen rides along): more pages than the limit allows
    for seq in range(1, 400):
        row = Row(seq, "7", f"/f/{seq}.pdf", f"{seq}.pdf" + "x" * 200)
        state.add_item("r", seq, row, LocalFile(row, Path(row.path), 1, f"{seq:064x}"),
                       Stage.SEEN, snapshot_run="r")
    state.commit()
except StateUnusable:  # at the commit, or where SQLite spilled its cache to the WAL
    print("failed")
for what, act in (("commit", state.commit), ("write", lambda: state.new_run("r2", "t"))):
    try:
        act()
        print(what, "said done")
    except StateUnusable:
        print(what, "refused")
"""


def test_a_commit_that_lost_the_pending_writes_refuses_every_later_write(
        tmp_path: Path) -> None:
    # A full disk or an I/O error at COMMIT rolls back every pending write. A later
    # commit that then said "done" would let an upload start with its key not on disk.
    done = subprocess.run([sys.executable, "-c", LOSE_PENDING, str(tmp_path / "s.db")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.split("\n")[:3] == ["failed", "commit refused", "write refused"], (
        done.stdout + done.stderr)
