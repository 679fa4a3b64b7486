"""A poll reads what changed, not every record the patient's uploads ever claimed (issue
22: cost grows with what changed). The claims are read from the state file once per
patient and kept up by each claim the state writes (`state_claims.py`): the memory must
say exactly what the file says, and a later poll's reads of the file must not grow with
the patient's earlier claims. Counts of SQLite's steps, never timings."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from pracsuite_ingest.counters import Counters
from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.reconcile.reconciler import Reconciler, UploadPhase
from pracsuite_ingest.settings import load_settings
from pracsuite_ingest.state import State
from test_poll_memory import Quiet, Records

WAITING = 20  # uploads each poll finds waiting


def name_of(n: int) -> str:
    return f"{n:06d} discharge summary.pdf"


def add_waiting(state: State, run_id: str, first: int, count: int) -> None:
    for n in range(first, first + count):
        row = Row(n, "1", f"files/{name_of(n)}", name_of(n))
        item = state.add_item(run_id, n, row,
                              LocalFile(row, Path(row.path), 48, f"{n:064x}"), Stage.SEEN)
        state.set_stage(item, Stage.PRESIGNED, key=f"temp/{uuid.uuid4()}/{name_of(n)}")
        state.set_stage(item, Stage.UPLOADING)
        state.set_stage(item, Stage.UPLOADED, uploaded_at=1000.0)


def add_claimed(state: State, run_id: str, first: int, count: int) -> None:
    """Rows an earlier run validated: record `100000 + n` claimed by row n's upload."""
    for n in range(first, first + count):
        row = Row(n, "1", f"files/{name_of(n)}", name_of(n))
        state.add_item(run_id, n, row, LocalFile(row, Path(row.path), 48, f"{n:064x}"),
                       Stage.VALIDATED, key=f"temp/{uuid.uuid4()}/{name_of(n)}",
                       attachment_id=str(100_000 + n), snapshot_run=run_id)


async def second_poll_steps(root: Path, earlier: int) -> int:
    """SQLite steps (in hundreds) of a patient's second poll, `WAITING` new uploads, with
    `earlier` records claimed by an earlier run; every upload of both polls validated."""
    root.mkdir()  # noqa: ASYNC240 - a test's folder, once
    settings = load_settings(None, {"api": {"base_url": "http://127.0.0.1:9",
                                            "vendor_api_key": "v", "practice_api_key": "p"},
                                    "state": {"path": str(root / "state.db")}},
                             require_input=False)
    state = State.open(root / "state.db")
    state.new_run("run-0", "2026-12-04T00:00:00Z")
    add_claimed(state, "run-0", 0, earlier)
    state.new_run("run-1", "2026-12-05T00:00:00Z")
    state.save_snapshot("run-1", "1", [])  # the earlier records are left out as claimed
    add_waiting(state, "run-1", earlier, WAITING)
    state.commit()
    records = Records([name_of(n) for n in range(earlier + WAITING)])
    reconciler = Reconciler(state, records, settings, "run-1",  # type: ignore[arg-type]
                            asyncio.Event(), Quiet(), Counters(), UploadPhase())
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    try:
        for poll in (1, 2):
            if poll == 2:
                add_waiting(state, "run-1", earlier + WAITING, WAITING)
                records.names += [name_of(earlier + WAITING + n) for n in range(WAITING)]
                state._db.set_progress_handler(count, 100)
            reconciler.refresh()
            await reconciler._slots.acquire()  # what the loop does before it starts a poll
            await reconciler.poll_patient("1", 0)
        state._db.set_progress_handler(None, 0)
        validated = sum(1 for i in state.items("run-1") if i.stage is Stage.VALIDATED)
        assert validated == 2 * WAITING, validated
    finally:
        state.close()
    return steps


async def test_a_later_polls_state_reads_do_not_grow_with_the_patients_earlier_claims(
        tmp_path: Path) -> None:
    few = await second_poll_steps(tmp_path / "few", 200)
    many = await second_poll_steps(tmp_path / "many", 6000)
    print(f"second poll: {few * 100:,} SQLite steps with 200 earlier claims, "
          f"{many * 100:,} with 6,000")
    # PracSuite's list is 30 times longer, which the poll walks (no state reads); read
    # again at each poll, 30 times as many claims were: here some 30 times the steps
    assert many < 2 * few, (few, many)


def test_the_claims_kept_in_memory_are_the_state_files_after_every_kind_of_claim(
        tmp_path: Path) -> None:
    state = State.open(tmp_path / "state.db")
    state.new_run("run-0", "2026-12-04T00:00:00Z")
    add_claimed(state, "run-0", 0, 5)
    state.new_run("run-1", "2026-12-05T00:00:00Z")
    add_waiting(state, "run-1", 5, 4)
    kept = state.patient_claims("1")  # read from the file, then kept up
    assert kept.ids == set(state.claims("1"))
    waiting = list(state.items("run-1"))
    # a poll's claim: the upload's key becomes one that claimed a record
    state.set_stage(waiting[0].id, Stage.VALIDATED, attachment_id="200000")
    # a row validated as it is added (another row of one upload, an earlier run's claim)
    add_claimed(state, "run-1", 20, 1)
    # a missing file whose record came later
    state.set_stage(waiting[1].id, Stage.MISSING, error="no record yet")
    state.set_stage(waiting[1].id, Stage.VALIDATED, attachment_id="200001")
    assert kept.ids == set(state.claims("1")) and len(kept.ids) == 8
    assert state.patient_claims("1") is kept
    for key in state.claims("1").values():
        assert key is not None and kept.may_have_claimed(key)
    first = waiting[0]
    assert first.key is not None
    assert state.claim_of_key("1", first.file_name, first.key) == "200000"
    assert state.claim_of_key("1", first.file_name, "temp/another/key.pdf") is None
    # another patient's claims are read when first asked, whatever was claimed before
    row = Row(99, "2", "files/x.pdf", "x.pdf")
    state.add_item("run-1", 99, row, LocalFile(row, Path(row.path), 1, "0" * 64),
                   Stage.VALIDATED, key="temp/k/x.pdf", attachment_id="300000")
    assert state.patient_claims("2").ids == {"300000"}
    state.close()
