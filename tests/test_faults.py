"""A busy PracSuite, a throttling S3 and a flaky network: every row still ends validated,
exactly one record each, with a bounded number of requests; SIGTERM mid-run resumes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e import config, make_files, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.sandbox.faults import ThrottleStyle

pytestmark = pytest.mark.slow


def records_per_key(stats: dict[str, Any]) -> Counter[str]:
    return Counter(r["key"] for c in stats["records_created"].values() for r in c["records"])


def one_record_per_row(report: dict[str, Any], stats: dict[str, Any]) -> None:
    items = report["items"]
    assert {it["status"] for it in items} == {"validated"}, [
        (it["status"], it["error"]) for it in items if it["status"] != "validated"]
    per_key = records_per_key(stats)
    assert stats["records_created_total"] == len(items)
    assert len({it["attachment_id"] for it in items}) == len(items)
    # each row's record came from the upload the row holds, once
    assert all(per_key[it["key"]] == 1 for it in items)


async def run_cli_proc(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pracsuite_ingest", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def run_until_stored(sb: Sandbox, cfg: Path, manifest: Path, cwd: Path, stored: int,
                           poll_s: float) -> asyncio.subprocess.Process:
    """Start a run; return once the sandbox's S3 has stored `stored` of its uploads."""
    proc = await run_cli_proc("run", "--config", str(cfg), "--manifest", str(manifest), cwd=cwd)
    while sb.stats()["uploads_stored"] < stored:  # noqa: ASYNC110 - polling another program
        await asyncio.sleep(poll_s)
    return proc


async def run_to_end(cfg: Path, manifest: Path, cwd: Path) -> tuple[int, str, str]:
    proc = await run_cli_proc("run", "--config", str(cfg), "--manifest", str(manifest), cwd=cwd)
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@dataclass
class ApiDown:
    """A run whose uploads S3 stored, PracSuite then answering 500 to everything until
    its end; then a second run with PracSuite back."""

    code: int
    err: str
    first: dict[str, Any]
    stored_after_first: int
    code2: int
    err2: str
    stats: dict[str, Any]


async def stored_then_api_down(tmp_path: Path, opts: SandboxOptions, rows: int) -> ApiDown:
    from pracsuite_ingest.sandbox.faults import FaultPlan

    async with Sandbox(opts) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, rows, ["4"]))
        cfg = config(tmp_path, sb, reconcile={"deadline_s": 1, "poll_interval_s": 0.2},
                     api={"max_attempts": 2, "timeout_s": 2})
        proc = await run_until_stored(sb, cfg, manifest, tmp_path, rows, 0.01)
        sb.set_faults(FaultPlan(fail_rate_500=1.0))
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        first = json.loads((tmp_path / "reports" / "latest.json").read_text())
        stored_after_first = sb.stats()["uploads_stored"]
        sb.set_faults(FaultPlan())
        # The next run's deadline outlasts the records' delay (validation_delay_s): with
        # less, it would rightly send again what still shows no record at its deadline.
        cfg = config(tmp_path, sb, reconcile={"deadline_s": 15, "poll_interval_s": 0.2},
                     api={"max_attempts": 2, "timeout_s": 2})
        code2, _, err2 = await run_to_end(cfg, manifest, tmp_path)
        stats = sb.stats()
    assert proc.returncode is not None
    return ApiDown(proc.returncode, err.decode(), first, stored_after_first, code2, err2,
                   stats)


# The deadline is what an upload whose S3 answer was lost waits before it is sent
# again: 8 s is 80 times the validation delay, and polls retry their 429s within it.
FAST = {"reconcile": {"deadline_s": 8, "poll_interval_s": 0.3},
        "api": {"max_attempts": 10}}


@pytest.mark.parametrize("style", list(ThrottleStyle))
async def test_every_throttle_style_slows_down_and_nothing_is_lost(
        tmp_path: Path, style: ThrottleStyle) -> None:
    # The date and reset styles name a moment retry_after_s + 1 s ahead, to the second:
    # with 0 they still ask for a wait (up to a second) and the run takes half as long.
    wait = 1 if style is ThrottleStyle.RETRY_AFTER_SECONDS else 0
    opts = SandboxOptions(validation_delay_s=0.1, fail_rate_429=0.1, throttle_style=style,
                          retry_after_s=wait, seed=11)
    rows = 12  # each 429 pauses the whole run for about a second: time goes with the 429s
    async with Sandbox(opts) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, rows, ["1", "2"]))
        # Every 429 pauses the whole process for the server's 1-2 s: give the polls time.
        cfg = config(tmp_path, sb, reconcile={"deadline_s": 40, "poll_interval_s": 0.3},
                     api={"max_attempts": 10})
        code, _, err = await run_to_end(cfg, manifest, tmp_path)
        stats = sb.stats()
    assert code == 0, err[-3000:]
    report = json.loads((tmp_path / "reports" / "latest.json").read_text())
    one_record_per_row(report, stats)
    assert stats["faults"].get("api_429", 0) > 0  # the faults did happen
    # no retry storm: at most 2 presigns per row on average
    assert sum(stats["requests"]["presign"].values()) <= 2 * rows


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_all_faults_at_once_every_row_validated_exactly_once(
        tmp_path: Path, seed: int) -> None:
    opts = SandboxOptions(
        validation_delay_s=0.1, seed=seed, fail_rate_429=0.1, retry_after_s=1,
        throttle_style=ThrottleStyle.GATEWAY, fail_rate_500=0.05, s3_slowdown_rate=0.1,
        s3_drop_before_rate=0.05, s3_drop_after_rate=0.05, latency_ms=(20, 80))
    rows = 60
    async with Sandbox(opts) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, rows, ["3", "4", "5"]))
        cfg = config(tmp_path, sb, **FAST)
        code, _, err = await run_to_end(cfg, manifest, tmp_path)
        stats = sb.stats()
    assert code == 0, err[-3000:]
    report = json.loads((tmp_path / "reports" / "latest.json").read_text())
    one_record_per_row(report, stats)
    faults = stats["faults"]
    assert faults.get("s3_drop_after", 0) + faults.get("s3_drop_before", 0) > 0 or seed != 1
    # Bounds (stated in the issue note): presigns <= 2 per row, S3 POSTs <= 2 per row.
    assert sum(stats["requests"]["presign"].values()) <= 2 * rows
    assert sum(stats["requests"]["s3_post"].values()) <= 2 * rows


async def test_expiring_policies_are_presigned_again(tmp_path: Path) -> None:
    # Policies live 2 s, to the second (so 1-2 s), and S3 answers after 0.3-1.8 s: about
    # one upload in five arrives expired (more on a loaded machine); 30 rows make at least
    # one expiry near certain, and eight in a row for one file near impossible.
    opts = SandboxOptions(validation_delay_s=0.1, policy_lifetime_s=2, latency_ms=(300, 1800),
                          seed=5)
    async with Sandbox(opts) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 30, ["6"]))
        # The deadline: every record's presign_url and its bytes (reconcile.verify) pay
        # the 0.3-1.8 s latency too, 8 at a time.
        cfg = config(tmp_path, sb, upload={"concurrency": 16, "presign_concurrency": 16},
                     api={"max_attempts": 10},
                     reconcile={"deadline_s": 40, "poll_interval_s": 0.3})
        code, _, err = await run_to_end(cfg, manifest, tmp_path)
        stats = sb.stats()
    assert code == 0, err[-3000:]
    report = json.loads((tmp_path / "reports" / "latest.json").read_text())
    one_record_per_row(report, stats)
    assert stats["requests"]["s3_post"].get("403", 0) > 0  # some did expire
    assert "presigned POST expired" in err


async def test_refused_keys_stop_the_run_early_naming_the_key(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions()) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 50, ["1", "2"]))
        cfg = config(tmp_path, sb, api={"practice_api_key": "revoked-key"})
        code, out, err = await run_to_end(cfg, manifest, tmp_path)
        stats = sb.stats()
    assert code == 3
    assert "api.practice_api_key" in err and "revoked-key" not in err + out
    assert stats["presigned"] == 0
    assert sum(sum(v.values()) for v in stats["requests"].values()) <= 4


async def test_sigterm_mid_run_exits_130_and_the_next_run_finishes_without_duplicates(
        tmp_path: Path) -> None:
    opts = SandboxOptions(validation_delay_s=0.1, latency_ms=(80, 160), seed=9)
    rows = 40
    async with Sandbox(opts) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, rows, ["7", "8"]))
        cfg = config(tmp_path, sb, upload={"concurrency": 3, "grace_s": 5}, **FAST)
        proc = await run_until_stored(sb, cfg, manifest, tmp_path, 10, 0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        first = json.loads((tmp_path / "reports" / "latest.json").read_text())
        code2, _, err2 = await run_to_end(cfg, manifest, tmp_path)
        stats = sb.stats()
    assert proc.returncode == 130, err.decode()[-3000:]
    summary = first["summary"]
    assert summary["total"] == rows and summary["pending"] > 0
    assert summary["failed"] == summary["missing"] == 0
    assert code2 == 0, err2[-3000:]
    second = json.loads((tmp_path / "reports" / "latest.json").read_text())
    assert {it["status"] for it in second["items"]} <= {"validated", "skipped"}
    assert stats["records_created_total"] == rows
    assert max(records_per_key(stats).values()) == 1
    assert stats["uploads_stored"] == rows  # nothing was sent twice


async def test_a_second_signal_stops_at_once_and_state_stays_consistent(
        tmp_path: Path) -> None:
    opts = SandboxOptions(validation_delay_s=0.1, latency_ms=(150, 300), seed=4)
    rows = 40
    async with Sandbox(opts) as sb:
        files = make_files(tmp_path, rows, ["9"])
        manifest = write_manifest(tmp_path, files)
        # a grace period far longer than the test: only the second signal can end it
        cfg = config(tmp_path, sb, upload={"concurrency": 4, "grace_s": 600}, **FAST)
        proc = await run_until_stored(sb, cfg, manifest, tmp_path, 3, 0.02)
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.communicate(), 20)
        first = json.loads((tmp_path / "reports" / "latest.json").read_text())
        code2, _, err2 = await run_to_end(cfg, manifest, tmp_path)
        stats = sb.stats()
    assert proc.returncode == 130
    # every input row has exactly one item, those not read before the stop `pending`
    # (a second signal while the intake waited for a slot left them out of the report)
    assert first["summary"]["pending"] > 0 and first["summary"]["total"] == rows
    assert sorted(Path(it["path"]).name for it in first["items"]) == \
        sorted(Path(f["path"]).name for f in files)
    assert code2 == 0, err2[-3000:]
    assert stats["records_created_total"] == rows
    assert max(records_per_key(stats).values()) == 1


async def test_a_lost_upload_is_not_sent_again_while_pracsuite_cannot_be_asked(
        tmp_path: Path) -> None:
    # Every S3 answer is lost (the objects are stored), then the API goes down: the
    # worker cannot know whether records exist, so it must not upload anything again.
    opts = SandboxOptions(validation_delay_s=0.1, s3_drop_after_rate=1.0, seed=2)
    rows = 6
    down = await stored_then_api_down(tmp_path, opts, rows)
    first, stored_after_first, code2, err2, stats = (
        down.first, down.stored_after_first, down.code2, down.err2, down.stats)
    assert down.code == 1, down.err[-2000:]
    assert first["summary"]["missing"] == rows
    assert all("could not be asked" in it["error"] for it in first["items"])
    assert stored_after_first == rows  # nothing was sent twice
    assert code2 == 0, err2[-3000:]  # the next run asks first, and finds every record
    assert stats["uploads_stored"] == rows and stats["records_created_total"] == rows


async def test_uploads_whose_patient_could_not_be_listed_stay_pending_not_missing(
        tmp_path: Path) -> None:
    # S3 takes every upload; then PracSuite answers 500 to everything until the deadline.
    # Nobody saw that PracSuite has no record: the uploads stay pending, saying why, and
    # the next run finds every record without sending anything again.
    opts = SandboxOptions(validation_delay_s=3.0, seed=3)
    rows = 4
    down = await stored_then_api_down(tmp_path, opts, rows)
    first, code2, err2, stats = down.first, down.code2, down.err2, down.stats
    assert down.code == 1, down.err[-2000:]
    assert first["summary"]["pending"] == rows and first["summary"]["missing"] == 0
    assert all("could not be read at any poll" in it["error"] for it in first["items"])
    assert code2 == 0, err2[-3000:]
    assert stats["uploads_stored"] == rows and stats["records_created_total"] == rows
