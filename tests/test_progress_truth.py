"""Progress that tells the truth: a bytes total from the input's sizes, an ETA from the
bytes still to send at the recent rate of bytes sent (skipped files do not make it look
fast), no deadline once it has passed, validated files counted on a terminal rather than
listed, and one JSON "progress" line per `log.progress_interval_s` in a scheduler's log."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest import logs, progress
from pracsuite_ingest.counters import Counters
from pracsuite_ingest.models import Row, Stage
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions


def finished_count(rows: list[Row]) -> progress.RowCount:
    count = progress.RowCount(lambda: rows)
    count._thread.join(timeout=60)
    assert count.total == len(rows)
    return count


def test_the_bytes_total_is_known_from_the_input_before_any_file_is_sent(
        tmp_path: Path) -> None:
    rows = []
    for i, size in enumerate((1000, 2000, 4000)):
        (tmp_path / f"{i}.pdf").write_bytes(b"x" * size)
        rows.append(Row(i + 1, "7", str(tmp_path / f"{i}.pdf"), f"{i}.pdf"))
    rows.append(Row(4, "7", str(tmp_path / "gone.pdf"), "gone.pdf"))
    count = finished_count(rows)
    c = Counters()
    assert progress.bytes_left(c, count) == 7000  # not "?": nothing read by the run yet
    c.rows, c.bytes_to_send, c.bytes_sent = 2, 3000, 1000  # rows 1-2 admitted, one sent
    assert progress.bytes_left(c, count) == 2000 + 4000
    c.rows = 4
    assert progress.bytes_left(c, count) == 2000


def test_a_resume_s_eta_comes_from_the_bytes_sent_not_the_files_skipped() -> None:
    rows = [Row(i, "7", "", "x.pdf", problem=None) for i in range(1, 101)]
    count = progress.RowCount(lambda: rows)
    count._thread.join(timeout=60)
    count._sums = count._sums.__class__("Q", [(i + 1) * 1000 for i in range(100)])
    c = Counters()
    c.tally(Stage.SKIPPED, 60)  # a resume: 60 files skipped at once, "done" in no time
    c.rows, c.bytes_to_send = 62, 2000
    rate = progress.SendRate(window_s=20)
    rate.sample(100.0, 0)
    assert progress.send_eta_s(c, count, rate) is None  # no byte sent yet: no guess
    c.bytes_sent = 1000
    rate.sample(110.0, 1000)  # 100 bytes/s actually sent
    # 1,000 admitted and unsent + 38 rows unread x 1,000 bytes, at 100 bytes/s
    assert progress.send_eta_s(c, count, rate) == pytest.approx(390.0)
    assert progress.eta_text(c, 100, 390.0) == "eta 0:06:30"


def test_the_rate_is_the_recent_one() -> None:
    rate = progress.SendRate(window_s=20)
    for t, sent in ((0, 0), (10, 10_000), (20, 20_000), (30, 21_000), (40, 22_000)):
        rate.sample(float(t), sent)
    assert rate.bytes_per_s() == pytest.approx(100.0)  # the last 20 s, not the average


def test_no_deadline_is_shown_once_it_has_passed() -> None:
    c = Counters()
    c.tally(Stage.VALIDATED, 4)
    c.awaiting, c.reconcile_until = 3, time.time() + 30
    assert "gives up at" in (progress.reconcile_line(c, c.reconcile_until - 1) or "")
    after = progress.reconcile_line(c, c.reconcile_until + 32) or ""
    assert "gives up at" not in after
    assert after == ("reconcile: 3 awaited · 4 validated so far · deadline passed: the "
                     "last polls are finishing")


@pytest.mark.parametrize(("fmt", "level", "listed"), [
    ("console", "info", False), ("console", "debug", True), ("json", "info", True)])
def test_validated_files_are_counted_on_a_terminal_and_listed_in_a_log(
        fmt: str, level: str, listed: bool) -> None:
    out = io.StringIO()
    logs.configure(level, fmt, stream=out)
    try:
        log = logs.get_logger()
        for i in range(3):
            log.info("item validated", stage="reconcile", item=i)
        log.info("run finished", validated=3)
    finally:
        logs.configure("info", "json")
    text = out.getvalue()
    assert text.count("item validated") == (3 if listed else 0)
    assert "run finished" in text


def test_a_progress_line_carries_files_bytes_validated_pace_and_eta(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(b"y" * 5000)
    count = finished_count([Row(1, "7", str(tmp_path / "a.pdf"), "a.pdf")])
    c = Counters()
    rate = progress.SendRate()
    rate.sample(0.0, 0)
    c.bytes_sent = c.bytes_to_send = 2500
    c.rows = 1
    rate.sample(5.0, 2500)
    fields = progress.progress_fields(c, count, rate, time.time())
    assert fields == {"phase": "send", "files_done": 0, "files_total": 1, "bytes_sent": 2500,
                      "bytes_total": 2500, "validated": 0, "awaiting_validation": 0,
                      "eta_s": 0}


@pytest.mark.slow
async def test_a_scheduler_s_log_gets_a_json_progress_line_every_interval(
        tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=2.0, latency_ms=(100, 100))) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 12, ["41"], size=20_000))
        cfg = config(tmp_path, sb, log={"level": "info", "format": "json",
                                        "progress_interval_s": 0.5},
                     api={"base_url": sb.base_url, "vendor_api_key": sb.vendor_key,
                          "practice_api_key": sb.practice_key, "requests_per_second": 20.0})
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
    assert result.code == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stderr.splitlines()]
    lines = [e for e in events if e["event"] == "progress"]
    assert len(lines) >= 2, [e["event"] for e in events]
    run_id = result.report(tmp_path / "reports")["run_id"]
    for e in lines:
        assert e["run_id"] == run_id and e["level"] == "info"
        assert e["files_total"] == 12 and e["bytes_total"] is not None
        assert {"files_done", "bytes_sent", "validated", "eta_s", "api", "phase"} <= e.keys()
    assert lines[-1]["bytes_total"] >= lines[-1]["bytes_sent"]
    assert lines[-1]["phase"] == "reconcile" or lines[-1]["files_done"] <= 12
