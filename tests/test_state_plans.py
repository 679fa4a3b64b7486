"""Per-row look-ups of the state file use an index, so a long manifest stays linear."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from pracsuite_ingest.models import LocalFile, Row, Stage
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
            assert re.search(r"SEARCH items USING (COVERING )?INDEX items_awaited "
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
            assert "USING COVERING INDEX items_awaited" in plan, (call, plan)
    finally:
        state.close()


def test_a_polls_claims_read_their_own_index_alone(tmp_path: Path) -> None:
    """The records a patient's uploads claimed (any run), left out by every poll: read
    through the rows, 100,000 of them held the loop 184 ms a poll (bench/loop_watch.py)."""
    state = State.open(tmp_path / "state.db")
    try:
        plan = plan_of(state, "claimed", "7")
        assert re.search(r"USING COVERING INDEX items_claimed \(client_id=\?", plan), plan
    finally:
        state.close()


def _validated(state: State, seq: int, client_id: str, name: str, sha256: str, key: str,
               record: str, run_id: str = "r1") -> None:
    row = Row(seq, client_id, f"/in/{name}", name)
    state.add_item(run_id, seq, row, LocalFile(row, Path(row.path), 1, sha256),
                   Stage.VALIDATED, key=key, attachment_id=record)


def test_a_poll_asks_which_of_its_own_keys_are_claimed_through_the_identity_index(
        tmp_path: Path) -> None:
    """The keys of a poll's uploads that some validated item claimed a record with: found
    by the uploads' identity, never by reading the patient's every claim."""
    state = State.open(tmp_path / "state.db")
    try:
        state.new_run("r1", "t")
        _validated(state, 1, "7", "a.pdf", "1" * 64, "k/a", "100")
        _validated(state, 2, "7", "b.pdf", "2" * 64, "k/b", "101")
        _validated(state, 3, "8", "a.pdf", "1" * 64, "k/a8", "102")
        asked = [("a.pdf", "1" * 64, "k/a"),  # the same upload: its record
                 ("b.pdf", "2" * 64, "k/other"),  # the same file, another upload: not
                 ("a.pdf", "1" * 64, "k/a8")]  # another patient's key: not
        assert state.claimed_by_key("7", asked) == {"k/a": "100"}
        assert state.claimed_by_key("8", asked) == {"k/a8": "102"}
        assert state.claimed("7") == {"100", "101"}
        db = state._db  # private, but the plan is what this test is about
        seen: list[str] = []
        db.set_trace_callback(seen.append)
        try:
            state.claimed_by_key("7", asked)
        finally:
            db.set_trace_callback(None)
        plan = " | ".join(str(r[-1]) for r in db.execute("EXPLAIN QUERY PLAN " + seen[-1]))
        assert re.search(r"SEARCH c USING INDEX items_identity_nfc \(client_id=\? AND "
                         r"name_nfc=\? AND sha256=\?\)", plan), plan
        assert "SCAN c" not in plan and "items_claimed" not in plan, plan
    finally:
        state.close()


def test_a_patients_claims_are_indexed_narrow_in_the_order_of_its_items(
        tmp_path: Path) -> None:
    """A commit's new claims go at the end of the patient's entries, ~60 a page. Ordered
    by record id (text), with the key, ~9 a page landed all over them: the index's pages
    were written 4.2 times each at 10^4 1 KB files, 0.48 KB of WAL a file
    (bench/state_bytes.py)."""
    path = tmp_path / "state.db"
    State.open(path).close()
    con = sqlite3.connect(path)
    try:
        columns = [r[2] for r in con.execute("PRAGMA index_xinfo(items_claimed)")]
    finally:
        con.close()
    assert columns[:2] == ["client_id", "id"] and "key" not in columns, columns


def test_a_poll_reads_its_awaiting_uploads_by_name_never_the_patients_other_rows(
        tmp_path: Path) -> None:
    """Before, these walked the identity index: every row the patient ever had, in every
    run, to find the few awaiting (a nightly practice's whole history at each poll)."""
    state = State.open(tmp_path / "state.db")
    try:
        for call, args in (("awaiting_by_name", ("run-1", "7", None, 100)),
                           ("awaiting_named", ("run-1", "7", "a.pdf", "b.pdf"))):
            plan = plan_of(state, call, *args)
            assert re.search(r"SEARCH items USING INDEX items_awaited "
                             r"\(run_id=\? AND client_id=\? AND name_nfc>\?", plan), (call, plan)
            assert "SCAN items" not in plan and "items_identity" not in plan, (call, plan)
    finally:
        state.close()


def test_a_state_file_of_an_earlier_version_gains_the_index_at_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    State.open(path).close()
    con = sqlite3.connect(path)
    con.execute("DROP INDEX items_awaited")
    con.close()
    state = State.open(path)
    try:
        assert "items_awaited" in plan_of(state, "awaiting", "run-1")
    finally:
        state.close()


def test_a_state_file_with_the_indexes_of_an_earlier_version_drops_them(
        tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    State.open(path).close()
    con = sqlite3.connect(path)
    con.execute("DROP INDEX items_awaited")
    awaiting = "WHERE stage IN ('uploaded', 'missing')"
    con.execute(f"CREATE INDEX items_awaiting ON items (run_id, client_id, seq) {awaiting}")
    con.execute("CREATE INDEX items_waiting ON items (run_id, client_id, seq, settled, "
                f"stage, outcome_unknown, uploaded_at, updated_at) {awaiting}")
    con.execute("CREATE INDEX items_awaiting_names ON items (run_id, client_id, name_nfc, id) "
                f"{awaiting}")
    con.execute("DROP INDEX items_claimed")
    con.execute("CREATE INDEX items_claims ON items (client_id, attachment_id, key, stage) "
                "WHERE stage = 'validated' AND attachment_id IS NOT NULL")
    con.commit()
    con.close()
    State.open(path).close()
    con = sqlite3.connect(path)
    try:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
    finally:
        con.close()
    assert "items_awaited" in names, names
    assert not names & {"items_awaiting", "items_waiting", "items_awaiting_names"}, names
    assert "items_claimed" in names and "items_claims" not in names, names


def test_one_index_holds_the_uploads_awaiting_a_record(tmp_path: Path) -> None:
    """Every upload enters the awaiting index and leaves it: each such index costs the
    pages where a patient's entries come and go, every commit (two of them were ~300 WAL
    frames a commit at 10^5 files, bench/state_bytes.py). The by-name reads, the counts
    and the reads in input order all use this one."""
    path = tmp_path / "state.db"
    State.open(path).close()
    con = sqlite3.connect(path)
    try:
        partial = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND sql LIKE '%uploaded%'")]
    finally:
        con.close()
    assert partial == ["items_awaited"], partial


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
