"""Reconcile alongside the uploads, on a schedule: each patient listed once for its
snapshot and once for the poll that finds its uploads; a patient's files validated
while another patient's are still being sent. In process, on the sandbox."""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from e2e import run_in_process, write_manifest
from pracsuite_ingest.models import Stage
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.settings import load_settings
from pracsuite_ingest.state import ItemRecord


async def run_once(sb: Sandbox, root: Path, manifest: Path, **sections: dict[str, Any]
                   ) -> list[ItemRecord]:
    """One run of `manifest` to its end; its items."""
    values: dict[str, dict[str, Any]] = {
        "api": {"base_url": sb.base_url, "vendor_api_key": sb.vendor_key,
                "practice_api_key": sb.practice_key, "requests_per_second": 500.0},
        "input": {"manifest": str(manifest)},
        "reconcile": {"deadline_s": 10.0, "poll_interval_s": 0.5},
        "state": {"path": str(root / "state.db")}, "report": {"dir": str(root / "reports")},
    }
    for name, more in sections.items():
        values[name].update(more) if name in values else values.setdefault(name, more)
    settings = load_settings(None, values)
    return await run_in_process(settings, root / "state.db", "2026-11-30T00:00:00Z")


def files(root: Path, spec: dict[str, list[int]]) -> list[dict[str, str]]:
    """Rows for {client: [size of each file]}, in that order."""
    rows = []
    for client, sizes in spec.items():
        for i, size in enumerate(sizes):
            path = root / "files" / client / f"doc{i}.pdf"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(size))
            rows.append({"client_id": client, "path": str(path.relative_to(root))})
    return rows


def list_calls(sb: Sandbox) -> Counter[str]:
    """GETs of each patient's attachment list (every page counted)."""
    out: Counter[str] = Counter()
    for ex in sb.api_requests:
        parts = ex.path.strip("/").split("/")
        if ex.method == "GET" and parts[-1] == "patient_attachment" and "patient" in parts:
            out[parts[parts.index("patient") + 1]] += 1
    return out


async def test_each_patient_is_listed_for_its_snapshot_and_one_poll_that_finds_its_files(
        tmp_path: Path) -> None:
    # Validation (0.15 s) well within the first interval (0.6 s): the first poll of each
    # patient finds every file. Polling every waiting patient as soon as the uploads
    # are done, then at each interval, lists each of them a third time.
    spec = {"11": [900, 901], "12": [902], "13": [903, 904, 905], "14": [906]}
    manifest = write_manifest(tmp_path, files(tmp_path, spec))
    async with Sandbox(SandboxOptions(validation_delay_s=0.15, clients=tuple(spec))) as sb:
        items = await run_once(sb, tmp_path, manifest,
                               reconcile={"deadline_s": 10.0, "poll_interval_s": 0.6})
        lists = list_calls(sb)
        name_reads = sum(ex.path.endswith("/presign_url") for ex in sb.api_requests)
    stages = Counter(i.stage for i in items)
    assert stages == {Stage.VALIDATED: 7}
    assert lists == {client: 2 for client in spec}  # one snapshot, one poll
    assert name_reads == 7  # each new record's name read once


async def test_a_patient_is_validated_while_a_later_patients_upload_is_still_being_sent(
        tmp_path: Path) -> None:
    # One upload at a time, each 300 KB under a 256 KB/s cap: each holds the upload
    # phase open for over a second, and a record takes 0.02 s. Which patient goes first
    # is not fixed (the files are checked, snapshotted and presigned ahead in parallel):
    # whichever it is, it must be validated while the other's upload is being sent.
    spec = {"21": [300 * 1024], "22": [300 * 1024]}
    manifest = write_manifest(tmp_path, files(tmp_path, spec))
    async with Sandbox(SandboxOptions(validation_delay_s=0.02, clients=tuple(spec))) as sb:
        done = await run_once(sb, tmp_path, manifest,
                               upload={"concurrency": 1, "max_bytes_per_second": 256 * 1024},
                               reconcile={"deadline_s": 10.0, "poll_interval_s": 0.1})
        lists = list_calls(sb)
    items = {i.client_id: i for i in done}
    assert {i.stage for i in items.values()} == {Stage.VALIDATED}
    with sqlite3.connect(tmp_path / "state.db") as db:
        order = [(item_id, stage) for item_id, stage in db.execute(
            "SELECT item_id, stage FROM transitions ORDER BY rowid")]
    uploaded = {c: order.index((i.id, "uploaded")) for c, i in items.items()}
    first, second = sorted(uploaded, key=uploaded.__getitem__)
    assert order.index((items[first].id, "validated")) < uploaded[second]
    assert lists[first] == 2  # polled once, after its upload, not before it
