"""A big poll's memory does not hold the patient's uploads (issue 22): one poll of one
patient's N waiting uploads and their N new records, in this process under
tracemalloc, claims every one while its traced memory grows by far less than what the
old poll held per upload (some 1.2 KB: every `Upload`, and every decision about it,
at once). The records' facts are still kept for the whole poll (`facts.py`); the
bound leaves room for them, not for the uploads. Counts of bytes, never timings."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import pytest

from pracsuite_ingest.api import PageRef, RecordRef
from pracsuite_ingest.counters import Counters
from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.reconcile import groups
from pracsuite_ingest.reconcile.reconciler import Reconciler, UploadPhase
from pracsuite_ingest.settings import load_settings
from pracsuite_ingest.state import State

pytestmark = pytest.mark.timeout(240)

N = 9000
PAGE = 100
BOUND = 450  # bytes a file: the records' facts (the old poll: ~1,100)


class Quiet:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class Records:
    """PracSuite's list of patient 1: a record for each upload, its description the
    file name (proof by name and size: one record and one upload of each)."""

    session = None

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def first_page(self, client_id: str) -> PageRef:
        return PageRef("page", 1)

    async def list_page(self, client_id: str, ref: PageRef
                        ) -> tuple[list[dict[str, Any]], PageRef | None]:
        start = (ref.page - 1) * PAGE
        page = [{"patient_attachment_id": str(100_000 + n), "file_size": 48,
                 "description": self.names[n], "created_at": "2026-12-05T00:00:00Z"}
                for n in range(start, min(start + PAGE, len(self.names)))]
        more = start + PAGE < len(self.names)
        return page, PageRef("page", ref.page + 1) if more else None

    async def record_presign(self, ref: RecordRef) -> dict[str, Any]:
        raise AssertionError("every record carries its name")


def waiting_state(path: Path, names: list[str]) -> State:
    state = State.open(path)
    state.new_run("run-1", "2026-12-05T00:00:00Z")
    state.save_snapshot("run-1", "1", [])
    for seq, name in enumerate(names, start=1):
        row = Row(seq, "1", f"files/{name}", name)
        item = state.add_item("run-1", seq, row,
                              LocalFile(row, Path(row.path), 48, f"{seq:064x}"), Stage.SEEN)
        state.set_stage(item, Stage.PRESIGNED, key=f"temp/{uuid.uuid4()}/{name}")
        state.set_stage(item, Stage.UPLOADING)
        state.set_stage(item, Stage.UPLOADED, uploaded_at=1000.0)
    state.commit()
    return state


async def poll_peak(root: Path, count: int) -> int:
    """The traced memory one poll of `count` waiting uploads (and their records) adds at
    its highest; every upload validated."""
    names = [f"{n:06d} referral from the hospital.pdf" for n in range(count)]
    root.mkdir()  # noqa: ASYNC240 - a test's folder, once
    settings = load_settings(None, {"api": {"base_url": "http://127.0.0.1:9",
                                            "vendor_api_key": "v", "practice_api_key": "p"},
                                    "state": {"path": str(root / "state.db")}},
                             require_input=False)
    state = waiting_state(root / "state.db", names)
    reconciler = Reconciler(state, Records(names), settings, "run-1",  # type: ignore[arg-type]
                            asyncio.Event(), Quiet(), Counters(), UploadPhase())
    reconciler.refresh()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await reconciler._slots.acquire()  # what the loop does before it starts a poll
        await reconciler.poll_patient("1", 0)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
        state.commit()
    validated = sum(1 for i in state.items("run-1") if i.stage is Stage.VALIDATED)
    state.close()
    assert validated == count  # the poll did its work
    return peak


async def test_a_poll_grows_by_far_less_than_a_kilobyte_for_each_more_upload(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The slope between two sizes: what a poll holds for all (a group of uploads, the
    # walk's page) cancels out; what it holds per upload and record does not. Small
    # groups: a group's own memory (some 2 KB an upload while it is matched) is then
    # small beside the difference measured, so the figure is steady.
    monkeypatch.setattr(groups, "GROUP", 200)
    await poll_peak(tmp_path / "first", 300)  # what a process's first poll sets up, once
    small = await poll_peak(tmp_path / "small", N // 3)
    big = await poll_peak(tmp_path / "big", N)
    per_file = (big - small) / (N - N // 3)
    print(f"poll peak: {small / 1e6:.1f} MB at {N // 3}, {big / 1e6:.1f} MB at {N}: "
          f"{per_file:.0f} bytes a file more")
    assert per_file < BOUND, f"{per_file:.0f} bytes a file"
