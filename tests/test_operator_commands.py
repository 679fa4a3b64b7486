"""`status` and `demo` as an operator meets them: a table on a terminal and JSON for
scripts, help that agrees with the README, and a demo whose closing advice works."""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
from rich.console import Console

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.status_view import per_status, print_status, runs_table
from test_sandbox_cli import sandbox_process

README = Path(__file__).resolve().parent.parent / "README.md"
RUNS = [
    {"run_id": "2026-11-25T02-00-00Z-3f9a", "started_at": "2026-11-25T02:00:00Z",
     "finished_at": "2026-11-25T02:17:42Z", "outcome": "finished",
     "stages": {"validated": 1200, "missing": 2, "invalid": 3}},
    {"run_id": "2026-11-26T02-00-00Z-77b0", "started_at": "2026-11-26T02:00:00Z",
     "finished_at": None, "outcome": "running",
     "stages": {"skipped": 1200, "uploading": 4, "seen": 6, "validated": 5}},
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_counts_unfinished_stages_as_pending() -> None:
    assert per_status(RUNS[1]["stages"]) == {"skipped": 1200, "pending": 10, "validated": 5}


def test_status_on_a_terminal_is_a_table_of_runs_with_items_per_status() -> None:
    console = Console(record=True, width=160)
    console.print(runs_table("practice.db", RUNS))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "outcome" in line)
    for column in ("run", "started", "finished", "outcome", "items", "validated", "missing",
                   "failed", "invalid", "skipped", "pending"):
        assert column in header, column
    first = next(line for line in text.splitlines() if "3f9a" in line)
    assert re.search(r"2026-11-25 02:00:00 .*2026-11-25 02:17:42 .*finished .*1,205 .*1,200"
                     r" .*2 .*0 .*3 .*0 .*0", first), first
    second = next(line for line in text.splitlines() if "77b0" in line)
    assert re.search(r"running .*1,215 .*5 .*0 .*0 .*0 .*1,200 .*10", second), second

    shown = Terminal()
    print_status("practice.db", RUNS, as_json=False, out=shown)
    assert "runs in practice.db" in shown.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(shown.getvalue())


def test_status_json_is_for_scripts_and_off_a_terminal() -> None:
    for out, as_json in ((Terminal(), True), (io.StringIO(), False)):
        print_status("practice.db", RUNS, as_json=as_json, out=out)
        assert json.loads(out.getvalue()) == {"state": "practice.db", "runs": RUNS}


@pytest.mark.slow
async def test_status_help_examples_are_the_readmes(tmp_path: Path) -> None:
    result = await run_cli("status", "--help", cwd=tmp_path)
    examples = [line.split("#")[0].strip() for line in result.stdout.splitlines()
                if line.strip().startswith("pracsuite-ingest status")]
    assert examples
    readme = README.read_text()
    for example in examples:
        assert example in readme, example


@pytest.mark.slow
async def test_status_json_of_a_real_state_file(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.05)) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 3, ["5"]))
        cfg = config(tmp_path, sb)
        run = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                            cwd=tmp_path)
    assert run.code == 0, run.stderr[-2000:]
    status = await run_cli("status", "--config", str(cfg), "--json", cwd=tmp_path)
    assert status.code == 0
    doc = json.loads(status.stdout)
    assert doc["state"] == str(tmp_path / "state.db")
    assert [(r["outcome"], r["stages"]) for r in doc["runs"]] == [("finished", {"validated": 3})]
    nothing = await run_cli("status", "--state", str(tmp_path / "none.db"), "--json",
                            cwd=tmp_path)
    assert json.loads(nothing.stdout)["runs"] == []


@pytest.mark.slow
async def test_the_demo_closes_with_advice_that_works_after_it(tmp_path: Path) -> None:
    demo = await run_cli("demo", "--files", "4", "--out", "demo-out", cwd=tmp_path)
    assert demo.code == 0, demo.stdout + demo.stderr[-2000:]
    assert "demo ok: all 4 good files validated" in demo.stdout
    # the demo's sandbox is gone: nothing tells the operator to reconcile against it
    assert not re.search(r"run `pracsuite-ingest reconcile`", demo.stdout)
    # named as it was started (here `<python> -m pracsuite_ingest`): what follows it
    lines = [shlex.split(line) for line in demo.stdout.splitlines()
             if line.startswith("  ") and (" sandbox --config-out " in line
                                           or " run --config sandbox.toml " in line)]
    assert lines and all(words[:3] == [sys.executable, "-m", "pracsuite_ingest"]
                         for words in lines), demo.stdout
    commands = [words[3:] for words in lines]
    assert [c[0] for c in commands] == ["sandbox", "run"]
    sandbox_args = commands[0][1:]
    assert sandbox_args == ["--config-out", "sandbox.toml"]
    async with sandbox_process(tmp_path, *sandbox_args):  # on a free port, not 8700
        # as written; the environment only makes it quicker (the empty file never gets
        # a record, so the run waits out its deadline)
        run = await run_cli(*commands[1], cwd=tmp_path,
                            env={"PRACSUITE_INGEST_RECONCILE__DEADLINE_S": "2",
                                 "PRACSUITE_INGEST_API__REQUESTS_PER_SECOND": "100"})
    assert run.code == 1, run.stdout + run.stderr[-2000:]  # the demo's bad rows
    summary = run.report(tmp_path / "sandbox-reports")["summary"]
    assert summary["validated"] == 4 and summary["total"] == 10


@pytest.mark.slow
async def test_a_rerun_of_validated_rows_logs_one_info_line_not_one_per_file(
        tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.05)) as sb:
        rows = make_files(tmp_path, 12, ["6", "7"])
        manifest = write_manifest(tmp_path, [*rows, rows[0]])  # and a repeated row
        cfg = config(tmp_path, sb, log={"level": "info", "format": "json"})
        first = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                              cwd=tmp_path)
        rerun = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                              cwd=tmp_path)
        debug = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                              "--log-level", "debug", cwd=tmp_path)
    assert first.code == 0 and rerun.code == 0 and debug.code == 0, rerun.stderr[-2000:]
    assert rerun.report(tmp_path / "reports")["summary"]["skipped"] == 13
    events = [json.loads(line) for line in rerun.stderr.splitlines()]
    per_file = [e for e in events if "item" in e]
    assert per_file == []  # 13 skipped rows, not one line each
    summary = [e for e in events if e["event"] == "items skipped"]
    assert len(summary) == 1 and summary[0]["level"] == "info"
    assert summary[0]["count"] == 13
    assert summary[0]["reasons"] == {"unchanged on disk": 13}  # not read again (issue 22.1)
    first_events = [json.loads(line) for line in first.stderr.splitlines()]
    assert [e["reasons"] for e in first_events if e["event"] == "items skipped"] == [
        {"duplicate row": 1}]
    skipped_debug = [json.loads(line) for line in debug.stderr.splitlines()
                     if '"item skipped"' in line]
    assert len(skipped_debug) == 13 and {e["level"] for e in skipped_debug} == {"debug"}
