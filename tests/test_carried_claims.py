"""An upload is proven by its own key, whichever row claimed its record.

A run stopped before it could ask about its uploads (here: a spent quota) leaves them
`uploaded`; the next run carries each (a new row, the same presigned key) and validates
it. Reconciling the first run afterwards finds each of its keys claimed by the later
row of the same upload: that record is its own (proof), though it is left out of
matching as already claimed. A poll asks this of its own uploads' keys through the
identity index (`StateReads.claimed_by_key`), not of the patient's every claim."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions


def _items(state: Path) -> list[tuple[str, str, str | None, str | None]]:
    con = sqlite3.connect(state)
    try:
        return [tuple(r) for r in con.execute(
            "SELECT run_id, stage, key, attachment_id FROM items ORDER BY id")]
    finally:
        con.close()


@pytest.mark.slow
async def test_an_earlier_runs_upload_is_validated_by_the_later_rows_claim_of_its_key(
        tmp_path: Path) -> None:
    rows = make_files(tmp_path, 3, ["1"], size=1200)
    manifest = write_manifest(tmp_path, rows)
    # One patient: its snapshot and three presigns are the four calls the quota allows;
    # the first poll is refused, so run 1 ends with its uploads unconfirmed.
    async with Sandbox(SandboxOptions(validation_delay_s=0.2, quota_after=4)) as sb:
        cfg = config(tmp_path, sb, upload={"concurrency": 1, "presign_concurrency": 1},
                     reconcile={"deadline_s": 8, "poll_interval_s": 0.2})
        first = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                              cwd=tmp_path)
        after_first = _items(tmp_path / "state.db")
        sb.reset_faults()  # the quota period resets
        second = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        run1 = after_first[0][0]
        again = await run_cli("reconcile", "--config", str(cfg), "--run-id", run1,
                              cwd=tmp_path)
    assert first.code == 3, first.stderr[-3000:]
    sent = {key for run, stage, key, _ in after_first if stage == "uploaded" and key}
    assert sent, after_first  # at least one upload awaited its record when run 1 stopped
    assert second.code == 0, second.stderr[-3000:]
    assert again.code == 0, again.stderr[-3000:]
    items = _items(tmp_path / "state.db")
    by_run: dict[str, dict[str, tuple[str, str | None]]] = {}
    for run, stage, key, record in items:
        if key in sent:
            by_run.setdefault(run, {})[key] = (stage, record)
    later = [run for run in by_run if run != run1]
    assert len(later) == 1, by_run  # run 2 carried every one of run 1's uploads
    for key in sent:
        stage2, record2 = by_run[later[0]][key]
        assert stage2 == "validated" and record2, (key, by_run)
        assert by_run[run1][key] == ("validated", record2), (key, by_run)
