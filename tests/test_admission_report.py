"""The send-at-most-once rule, the report statuses and the exit codes."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from pracsuite_ingest import report
from pracsuite_ingest.admission import Action, admit
from pracsuite_ingest.models import LocalFile, Row, Stage, Status
from pracsuite_ingest.state import ItemRecord, State

BASE = ItemRecord(1, "r0", 1, 2, "42", "/a.pdf", "a.pdf", 5, "ab", {}, Stage.VALIDATED, None, 1,
                  "temp/k", "900", False, "r0", None, 1.0)


def test_a_row_repeated_in_the_run_is_a_duplicate() -> None:
    assert admit(BASE, None).action is Action.DUPLICATE


@pytest.mark.parametrize(("stage", "unknown", "action"), [
    (Stage.VALIDATED, False, Action.SKIP),
    (Stage.UPLOADED, False, Action.RECONCILE),
    (Stage.UPLOADING, False, Action.RECONCILE),  # killed mid-upload: may still become a record
    (Stage.MISSING, False, Action.RECONCILE),    # S3 said 204: PracSuite may be slow
    (Stage.MISSING, True, Action.RECONCILE),     # answer lost: ask PracSuite first, again
    (Stage.FAILED, False, Action.SEND),
])
def test_what_an_earlier_run_left_decides(stage: Stage, unknown: bool, action: Action) -> None:
    earlier = replace(BASE, stage=stage, outcome_unknown=unknown)
    assert admit(None, earlier).action is action


def test_nothing_known_means_send() -> None:
    assert admit(None, None).action is Action.SEND


@pytest.mark.parametrize(("summary", "interrupted", "dry", "code"), [
    ({"validated": 3, "skipped": 1}, False, False, 0),
    ({"validated": 3, "missing": 1}, False, False, 1),
    ({"invalid": 1}, False, False, 1),
    ({"validated": 1}, True, False, 130),
    ({"pending": 4}, False, True, 0),
    ({"pending": 4, "invalid": 1}, False, True, 1),
])
def test_exit_codes(summary: dict[str, int], interrupted: bool, dry: bool, code: int) -> None:
    assert report.exit_code(summary, interrupted=interrupted, dry_run=dry) == code


def test_unfinished_stages_report_as_pending() -> None:
    assert {report.status_of(s) for s in (Stage.SEEN, Stage.PRESIGNED, Stage.UPLOADING,
                                           Stage.UPLOADED)} == {Status.PENDING}


def test_report_is_built_from_state_and_written_atomically_owner_only(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.db")
    state.new_run("r1", "t0")
    row = Row(2, "42", "/x/a, \"b\".pdf", 'a, "b".pdf', {"note": "n"})
    local = LocalFile(row, Path(row.path), 5, "ab")
    first = state.add_item("r1", 1, row, local, Stage.SEEN, snapshot_run="r1")
    for stage in (Stage.PRESIGNED, Stage.UPLOADING, Stage.UPLOADED):
        state.set_stage(first, stage, key="temp/k")
    state.set_stage(first, Stage.VALIDATED, attachment_id="77")
    state.add_item("r1", 2, row, local, Stage.SKIPPED, error="dup", duplicate_of=first)
    state.add_item("r1", 3, Row(4, "", "", "", {}, "line 4: bad"), None, Stage.INVALID,
                   error="line 4: bad")
    doc = report.build(state, "r1")
    path = report.write(doc, tmp_path / "rep")
    assert doc["summary"] == {"total": 3, "validated": 1, "missing": 0, "failed": 0,
                              "invalid": 1, "skipped": 1, "pending": 0, "verified": 0}
    loaded = json.loads(path.read_text())
    assert loaded["items"][1]["attachment_id"] == "77"  # a duplicate carries the first's record
    assert loaded["items"][0]["extra"] == {"note": "n"}
    for name in ("r1.json", "r1.csv", "r1.html", "latest.json", "latest.csv", "latest.html"):
        assert stat.S_IMODE((tmp_path / "rep" / name).stat().st_mode) == 0o600
    csv_text = (tmp_path / "rep" / "latest.csv").read_text()
    assert '"a, ""b"".pdf"' in csv_text
    assert not [p for p in (tmp_path / "rep").iterdir() if p.name.endswith(".tmp")]
    html = (tmp_path / "rep" / "r1.html").read_text()
    assert "line 4: bad" in html and "<script" not in html and "http" not in html
    state.close()


def test_second_process_on_one_state_file_is_refused(tmp_path: Path) -> None:
    from pracsuite_ingest.errors import Fatal

    first = State.open(tmp_path / "s.db")
    with pytest.raises(Fatal, match="another pracsuite-ingest run"):
        State.open(tmp_path / "s.db")
    first.close()
    State.open(tmp_path / "s.db").close()
