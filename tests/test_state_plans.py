"""Per-row look-ups of the state file use an index, so a long manifest stays linear."""

from __future__ import annotations

import re
from pathlib import Path

from pracsuite_ingest.state import State


def plan_of(state: State, call: str) -> str:
    """SQLite's query plan for the statements `call` runs on the state file."""
    db = state._db  # private, but the plan is what this test is about
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    try:
        getattr(state, call)("run-1", "7", "a.pdf", "0" * 64)
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
