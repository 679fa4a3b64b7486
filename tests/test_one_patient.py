"""One patient with many files (issue 22): the work of matching and claiming grows with
the uploads, not with their square; a big poll does not hold the event loop; a shutdown
during it is honoured at once. Counts and conditions, never timings."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from e2e import run_in_process, write_manifest
from pracsuite_ingest.models import Stage
from pracsuite_ingest.reconcile import poll, records
from pracsuite_ingest.reconcile.claims import VerifyMode, decide_claims
from pracsuite_ingest.reconcile.match import Evidence, Upload
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.settings import load_settings
from pracsuite_ingest.state import ItemRecord, State

FILES = 1500  # well past big_polls.BIG: the poll's pure work goes to a thread
WATCHED = 1000  # a step of a poll of this many uploads or more is watched


class CountedId(str):
    """A record id that counts the comparisons made with it (hashing is a str's)."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        CountedId.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def named_each(n: int) -> tuple[list[Upload], Evidence]:
    """`n` uploads, each named (name and size) by its own new record, no bytes read."""
    uploads = [Upload(i, "7", f"{i}.pdf", 10, f"temp/{i}.pdf", sha256="ab" * 32)
               for i in range(n)]
    return uploads, Evidence({}, {i: [CountedId(1000 + i)] for i in range(n)})


@pytest.mark.parametrize("n", [500, 2000])
def test_deciding_what_to_download_compares_record_ids_a_linear_number_of_times(
        n: int) -> None:
    # Each record must be downloaded (verify "all", no digest yet). Keeping the list of records to
    # download as a list compared each new one with all before it: n^2/2 comparisons.
    uploads, evidence = named_each(n)
    CountedId.compared = 0
    decision = decide_claims(uploads, evidence, VerifyMode.ALL, {})
    assert len(decision.download) == n
    assert CountedId.compared <= 2 * n


@pytest.mark.parametrize("n", [500, 2000])
def test_the_uploads_each_record_may_decide_are_found_in_one_pass(n: int) -> None:
    # The poll asked, for each record to download, every upload whether it named it.
    from pracsuite_ingest.reconcile import big_polls

    uploads, evidence = named_each(n)

    class Counting(dict[int, list[str]]):
        asked = 0

        def get(self, key: Any, default: Any = None) -> Any:
            Counting.asked += 1
            return super().get(key, default)

    counted = Evidence({}, Counting(evidence.named))
    _, deciding = big_polls.plan_reads(uploads, counted, VerifyMode.ALL, {})
    assert {rid: [u.item_id for u in ups] for rid, ups in deciding.items()} == {
        str(1000 + i): [i] for i in range(n)}
    assert Counting.asked <= 3 * n  # decide_claims' own look-ups and one per upload here


def test_a_patients_waiting_uploads_read_in_pages_of_names_are_those_read_at_once(
        tmp_path: Path) -> None:
    # A poll reads its uploads twice: in pages in name order (its index), then a group
    # of names at a time (`reconcile/sources.py`); both are every upload still waiting.
    from pracsuite_ingest.models import LocalFile, Row
    from pracsuite_ingest.reconcile import big_polls
    from pracsuite_ingest.reconcile.match import Upload, nfc
    from pracsuite_ingest.reconcile.sources import StateUploads
    from pracsuite_ingest.state_reads import Waiting

    def upload_of(item: ItemRecord | Waiting) -> Upload:
        return Upload(item.id, item.client_id, item.file_name, item.size, item.key or "",
                      sha256=item.sha256, seq=item.seq)

    async def read(source: StateUploads) -> tuple[list[Upload], list[Upload]]:
        paged = [u async for page in source.by_name() for u in page]
        return paged, await source.named("", None)

    state = State.open(tmp_path / "state.db")
    try:
        state.new_run("r", "t")
        for seq in range(1, 2 * big_polls.PAGE + 7):
            name = f"{seq % 50}.pdf" if seq % 3 else f"Cafe\u0301 {seq % 7}.pdf"  # names shared
            row = Row(seq, "1" if seq % 5 else "2", f"f/{seq}.pdf", name)
            item = state.add_item("r", seq, row, LocalFile(row, Path(row.path), 9, "ab" * 32),
                                  Stage.SEEN)
            if seq % 7:
                state.set_stage(item, Stage.PRESIGNED, key=f"k{seq}")
                state.set_stage(item, Stage.UPLOADING)
                state.set_stage(item, Stage.UPLOADED, uploaded_at=1000.0 + seq % 97)
        state.commit()
        paged, grouped = asyncio.run(read(StateUploads(state, "r", "1", upload_of)))
        at_once = [upload_of(i) for i in state.awaiting("r", "1")]
        assert paged == sorted(at_once, key=lambda u: (nfc(u.file_name), u.item_id))
        assert grouped == at_once  # item order
        assert len(paged) > big_polls.PAGE
        assert state.awaiting_count("r", "1") == (
            len(at_once), max(i.uploaded_at or 0.0 for i in state.awaiting("r", "1")))
    finally:
        state.close()


async def run_one_patient(sb: Sandbox, root: Path, count: int,
                          shutdown: asyncio.Event | None = None) -> list[ItemRecord]:
    """`count` small files of patient 1, one run to its end; its items."""
    folder = root / "files"
    folder.mkdir()
    rows = []
    for i in range(count):
        (folder / f"{i:05d} scan.pdf").write_bytes(os.urandom(48))
        rows.append({"client_id": "1", "path": f"files/{i:05d} scan.pdf"})
    settings = load_settings(None, {
        "api": {"base_url": sb.base_url, "vendor_api_key": sb.vendor_key,
                "practice_api_key": sb.practice_key, "requests_per_second": 1000.0},
        "input": {"manifest": str(write_manifest(root, rows))},
        "reconcile": {"deadline_s": 300.0, "poll_interval_s": 0.5},
        "state": {"path": str(root / "state.db")}, "report": {"dir": str(root / "reports")},
        "log": {"level": "warning"}})
    return await run_in_process(settings, root / "state.db", "2026-12-04T00:00:00Z", shutdown)


def watch_off_loop(monkeypatch: pytest.MonkeyPatch, module: Any, name: str,
                   seen: list[str]) -> None:
    """Wrap `module.name` (a pure step of the poll): on a big poll, note whether it ran
    on the event loop's thread, and if not, whether the loop ran meanwhile (it waits,
    generously, for a callback it asks the loop to run)."""
    original: Callable[..., Any] = getattr(module, name)
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()

    def wrapped(uploads: Any, *args: Any, **kwargs: Any) -> Any:
        if len(uploads) >= WATCHED:
            if threading.get_ident() == loop_thread:
                seen.append(f"{name}: on the loop")
            else:
                ran = threading.Event()
                loop.call_soon_threadsafe(ran.set)
                seen.append(f"{name}: " + ("loop ran" if ran.wait(120) else "loop held"))
        return original(uploads, *args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


async def test_one_patients_thousands_of_files_are_all_validated_with_the_loop_free(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Records without a name (the sandbox's default): every name is read through
    # presign_url, every record's checksum read (verify "ambiguous"), then claimed.
    seen: list[str] = []
    watch_off_loop(monkeypatch, poll, "match", seen)
    watch_off_loop(monkeypatch, poll, "decide_claims", seen)
    async with Sandbox(SandboxOptions(validation_delay_s=0.0, clients=("1",))) as sb:
        items = await run_one_patient(sb, tmp_path, FILES)
    assert Counter(i.stage for i in items) == {Stage.VALIDATED: FILES}
    assert len({i.attachment_id for i in items}) == FILES
    assert seen  # the big poll's matching and claiming were watched
    assert set(seen) == {"match: loop ran", "decide_claims: loop ran"}


async def test_a_shutdown_during_a_big_poll_stops_it_and_leaves_every_file_pending_or_valid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What SIGTERM does (commands._install_signal_handlers sets the run's shutdown event),
    # done when the big poll has read 50 records' names. The old poll read every name,
    # then claimed every file, however long that took.
    shutdown = asyncio.Event()
    names_read = 0
    original = records.RecordReader.presign

    async def presign(self: records.RecordReader, rid: str, link: str = "") -> Any:
        nonlocal names_read
        names_read += 1
        if names_read == 50:
            shutdown.set()
        return await original(self, rid, link)

    monkeypatch.setattr(records.RecordReader, "presign", presign)
    async with Sandbox(SandboxOptions(validation_delay_s=0.0, clients=("1",))) as sb:
        items = await run_one_patient(sb, tmp_path, 600, shutdown)
    stages = Counter(i.stage for i in items)
    assert set(stages) <= {Stage.UPLOADED, Stage.VALIDATED}, stages
    assert names_read < 600  # the poll stopped: not every name was read
    assert stages[Stage.UPLOADED] > 0  # ... and what it had not decided waits
    assert all(i.attachment_id for i in items if i.stage is Stage.VALIDATED)
