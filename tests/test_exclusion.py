"""An upload is reconciled against the snapshot taken before *it*, through any number
of later runs: the history behind issue 17's six duplicate records, in process."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from e2e import make_files, write_manifest
from pracsuite_ingest.connection import make_client, make_session
from pracsuite_ingest.models import Stage
from pracsuite_ingest.pipeline import Run
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.sandbox.faults import FaultPlan
from pracsuite_ingest.settings import Settings, load_settings
from pracsuite_ingest.state import State


def settings_for(sb: Sandbox, root: Path, manifest: Path) -> Settings:
    return load_settings(None, {
        "api": {"base_url": sb.base_url, "vendor_api_key": sb.vendor_key,
                "practice_api_key": sb.practice_key, "requests_per_second": 500.0},
        "input": {"manifest": str(manifest)},
        "reconcile": {"deadline_s": 0.5, "poll_interval_s": 0.1},
        "state": {"path": str(root / "state.db")}, "report": {"dir": str(root / "reports")},
    })


async def one_run(settings: Settings, state: State, run_id: str, *, reconcile: bool) -> None:
    async with make_session(settings) as session:
        run = Run(settings, state, make_client(settings, session), session, dry_run=False,
                  shutdown=asyncio.Event(), run_id=run_id)
        state.new_run(run_id, "2026-11-30T00:00:00Z")
        if reconcile:
            await run.execute()
        else:
            await run.upload_all()  # as if killed once the uploads were done


async def test_a_carried_upload_whose_record_predates_the_next_snapshot_is_not_sent_again(
        tmp_path: Path) -> None:
    rows = make_files(tmp_path, 2, ["7"])  # "00000 letter.pdf", "00001 Pathology, FBC.pdf"
    # PracSuite refuses the second file at validation: its upload never gets a record.
    opts = SandboxOptions(validation_delay_s=0.05, seed=1, reject_names="Pathology")
    async with Sandbox(opts) as sb:
        # Run 1 sends the first file; S3 stores it but the answer is lost; the run dies.
        first = write_manifest(tmp_path, rows[:1])
        state = State.open(tmp_path / "state.db")
        sb.set_faults(FaultPlan(s3_drop_after_rate=1.0))
        await one_run(settings_for(sb, tmp_path, first), state, "run-1", reconcile=False)
        sb.set_faults(FaultPlan())
        while sb.stats()["records_created_total"] < 1:  # noqa: ASYNC110 - another program
            await asyncio.sleep(0.02)
        # Run 2 carries it (outcome unknown), snapshots the client (its record now
        # among the existing ones) and sends the second file, whose S3 answer is lost
        # too: two lost uploads of one client, reconciled together to the deadline.
        both = write_manifest(tmp_path, rows)
        sb.set_faults(FaultPlan(s3_drop_after_rate=1.0))
        await one_run(settings_for(sb, tmp_path, both), state, "run-2", reconcile=True)
        stats = sb.stats()
        items = list(state.items("run-2"))
        state.close()
    per_name = Counter(r["file_name"] for r in stats["records_created"]["7"]["records"])
    assert max(per_name.values()) == 1, per_name  # never twice
    carried, refused = items
    assert carried.stage is Stage.VALIDATED, (carried.stage, carried.error)
    by_key = {r["key"]: r["id"] for r in stats["records_created"]["7"]["records"]}
    assert by_key[carried.key or ""] == carried.attachment_id
    assert refused.stage is Stage.MISSING  # no record, sent again each round, never found
