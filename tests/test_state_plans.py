"""Per-row look-ups of the state file use an index, so a long manifest stays linear."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from pracsuite_ingest.state import SCHEMA, State


def plan_of(state: State, call: str, *args: str) -> str:
    """SQLite's query plan for the statements `call` runs on the state file."""
    db = state._db  # private, but the plan is what this test is about
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    try:
        getattr(state, call)(*(args or ("run-1", "7", "a.pdf", "0" * 64)))
    finally:
        db.set_trace_callback(None)
    (sql,) = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    # The trace shows the statement with its parameters bound: plan that very text.
    rows = db.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
    return " | ".join(str(r[-1]) for r in rows)


def test_duplicate_look_ups_search_the_identity_index(tmp_path: Path) -> None:
    state = State.open(tmp_path / "state.db")
    try:
        for call in ("find_in_run", "find_earlier"):
            plan = plan_of(state, call)
            assert re.search(r"SEARCH items USING INDEX items_identity", plan), (call, plan)
            assert "SCAN items" not in plan, (call, plan)
    finally:
        state.close()


# What a poll asks, each time (polling.py, reconcile): the run's uploads awaiting a
# record, of one client or all, when each client's latest ended, and the lost ones.
POLL_LOOK_UPS = [("awaiting", ("run-1",)), ("awaiting", ("run-1", "7")),
                 ("awaiting_since", ("run-1",)), ("lost_uploads", ("run-1",))]


def test_a_poll_searches_the_awaiting_index_never_the_run(tmp_path: Path) -> None:
    """Before, these walked every item of the run (the (run_id, seq) index) and filtered:
    34-44 ms a look-up on a 100,000-row state. The partial index holds only the
    uploads awaiting a record."""
    state = State.open(tmp_path / "state.db")
    try:
        for call, args in POLL_LOOK_UPS:
            plan = plan_of(state, call, *args)
            assert re.search(r"SEARCH items USING (COVERING )?INDEX items_waiting "
                             r"\(run_id=\?", plan), (
                call, args, plan)
            assert "SCAN items" not in plan and "autoindex" not in plan, (call, args, plan)
    finally:
        state.close()


def test_a_poll_rounds_counts_read_the_awaiting_index_alone_never_the_rows(
        tmp_path: Path) -> None:
    """How many uploads await and when the latest ended, per client and for the run:
    read through the rows, these held the loop 120-330 ms a round with 100,000 uploads of
    one patient awaiting (bench/loop_watch.py); the index now holds what they need."""
    state = State.open(tmp_path / "state.db")
    try:
        for call, args in (("awaiting_since", ("run-1",)), ("awaiting_count", ("run-1", "7"))):
            plan = plan_of(state, call, *args)
            assert "USING COVERING INDEX items_waiting" in plan, (call, plan)
    finally:
        state.close()


def test_a_polls_claims_read_their_own_index_alone(tmp_path: Path) -> None:
    """The records a patient's uploads claimed (any run), left out by every poll: read
    through the rows, 100,000 of them held the loop 184 ms a poll (bench/loop_watch.py)."""
    state = State.open(tmp_path / "state.db")
    try:
        plan = plan_of(state, "claims", "7")
        assert re.search(r"USING COVERING INDEX items_claims \(client_id=\?", plan), plan
    finally:
        state.close()


def test_a_poll_reads_its_awaiting_uploads_by_name_never_the_patients_other_rows(
        tmp_path: Path) -> None:
    """Before, these walked the identity index: every row the patient ever had, in every
    run, to find the few awaiting (a nightly practice's whole history at each poll)."""
    state = State.open(tmp_path / "state.db")
    try:
        for call, args in (("awaiting_by_name", ("run-1", "7", None, 100)),
                           ("awaiting_named", ("run-1", "7", "a.pdf", "b.pdf"))):
            plan = plan_of(state, call, *args)
            assert re.search(r"SEARCH items USING INDEX items_awaiting_names "
                             r"\(run_id=\? AND client_id=\? AND name_nfc>\?", plan), (call, plan)
            assert "SCAN items" not in plan and "items_identity" not in plan, (call, plan)
    finally:
        state.close()


def test_a_state_file_of_an_earlier_version_gains_the_index_at_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    State.open(path).close()
    con = sqlite3.connect(path)
    con.execute("DROP INDEX items_waiting")
    con.close()
    state = State.open(path)
    try:
        assert "items_waiting" in plan_of(state, "awaiting", "run-1")
    finally:
        state.close()


def test_a_state_file_with_the_narrower_awaiting_index_of_an_earlier_version_drops_it(
        tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    State.open(path).close()
    con = sqlite3.connect(path)
    con.execute("DROP INDEX items_waiting")
    con.execute("CREATE INDEX items_awaiting ON items (run_id, client_id, seq) "
                "WHERE stage IN ('uploaded', 'missing')")
    con.commit()
    con.close()
    State.open(path).close()
    con = sqlite3.connect(path)
    try:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
    finally:
        con.close()
    assert "items_waiting" in names and "items_awaiting" not in names, names


def page_size(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("PRAGMA page_size").fetchone()[0])
    finally:
        con.close()


def test_a_new_state_file_has_1_kb_pages_and_one_with_rows_keeps_its_own(
        tmp_path: Path) -> None:
    """A commit writes each page it changed whole: 1 KB pages write about a quarter of
    what 4 KB pages did per stage change (bench/scale.py has the bytes)."""
    new = tmp_path / "new.db"
    State.open(new).close()
    assert page_size(new) == 1024
    state = State.open(new)  # opened again: still WAL, still 1 KB
    try:
        assert state._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        state.close()
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA)  # as an earlier version made it: 4 KB pages, a run in it
    con.execute("INSERT INTO runs (run_id, started_at) VALUES ('r', 't')")
    con.commit()
    con.close()
    State.open(old).close()
    assert page_size(old) == 4096
