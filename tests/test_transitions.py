"""The item state machine: what may follow what, enforced where state is written."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.state import State
from pracsuite_ingest.transitions import ALLOWED, IllegalTransition, allowed, predecessors

TERMINAL = (Stage.VALIDATED, Stage.FAILED, Stage.INVALID, Stage.SKIPPED)


def test_the_happy_path_is_allowed() -> None:
    path = [Stage.SEEN, Stage.PRESIGNED, Stage.UPLOADING, Stage.UPLOADED, Stage.VALIDATED]
    assert all(allowed(a, b) for a, b in itertools.pairwise(path))


@pytest.mark.parametrize("end", TERMINAL)
def test_ends_are_final(end: Stage) -> None:
    assert ALLOWED[end] == frozenset()


def test_nothing_skips_the_upload_on_the_way_to_validated() -> None:
    assert predecessors(Stage.VALIDATED) == {Stage.UPLOADING, Stage.UPLOADED, Stage.MISSING}
    assert not allowed(Stage.SEEN, Stage.UPLOADED)
    assert not allowed(Stage.PRESIGNED, Stage.UPLOADED)


def test_a_confirmed_upload_never_fails_or_goes_back() -> None:
    # S3 said 204: only PracSuite's record (or its absence) decides now.
    assert ALLOWED[Stage.UPLOADED] == {Stage.VALIDATED, Stage.MISSING}


def test_state_refuses_an_illegal_move_and_writes_nothing(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.db")
    state.new_run("r", "t")
    row = Row(1, "1", "/a.pdf", "a.pdf")
    item = state.add_item("r", 1, row, LocalFile(row, Path("/a.pdf"), 1, "x"), Stage.SEEN)
    with pytest.raises(IllegalTransition, match="seen -> validated"):
        state.set_stage(item, Stage.VALIDATED, attachment_id="9")
    got = state.item(item)
    assert got is not None and got.stage is Stage.SEEN and got.attachment_id is None
    state.close()
