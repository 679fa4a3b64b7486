"""Counts read as English ("1 file", "2 GET requests"), and the hints a person is given
name a command that runs: the demo's `.venv/bin/pracsuite-ingest` when that is how it
was started; an interrupted run says to run the same command again."""

from __future__ import annotations

import os
from pathlib import Path

from pracsuite_ingest.demo import closing_text
from pracsuite_ingest.discovery import Findings, render
from pracsuite_ingest.hints import program_name, resume_text
from pracsuite_ingest.plan import plan_text
from pracsuite_ingest.plural import counted, plural
from pracsuite_ingest.report import summary_text


def test_counts_take_the_plural_only_when_not_one() -> None:
    assert counted(1, "file") == "1 file" and counted(0, "file") == "0 files"
    assert counted(1, "GET request") == "1 GET request"
    assert counted(2, "GET request") == "2 GET requests"
    assert counted(1200, "entry") == "1,200 entries" and counted(3, "day") == "3 days"
    assert plural("is", 1) == "is" and plural("is", 2) == "are"


def test_one_of_a_thing_is_said_in_the_singular_where_counts_are_printed() -> None:
    doc = {"run_id": "r1", "summary": {"total": 1, "validated": 1, "skipped": 0,
                                       "missing": 0, "failed": 0, "invalid": 0,
                                       "pending": 0}, "items": []}
    assert summary_text(doc, None) == "run r1: 1 item: validated 1"
    plan = plan_text({"items": [{"client_id": "7", "status": "pending", "size": 10,
                                 "error": None}]}, 0)
    assert "      1 file, 10 bytes, for 1 client" in plan
    assert "      0 files already validated" in plan and "0 invalid rows" in plan
    found = Findings("42")
    found.times_ms = [3.0]
    text = render(found, "http://127.0.0.1:1/v1")
    assert "1 GET request," in text and "1 GET requests" not in text


def test_the_program_is_named_as_it_was_started(tmp_path: Path) -> None:
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    script = venv_bin / "pracsuite-ingest"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    elsewhere = tmp_path / "usr-bin"
    elsewhere.mkdir()
    cwd = str(tmp_path)
    # `make demo` runs .venv/bin/pracsuite-ingest; .venv/bin is not on PATH
    assert program_name(".venv/bin/pracsuite-ingest", cwd=cwd, path=str(elsewhere)) == \
        f".venv{os.sep}bin{os.sep}pracsuite-ingest"
    assert program_name(str(script), cwd=cwd, path=str(elsewhere)) == \
        f".venv{os.sep}bin{os.sep}pracsuite-ingest"
    # an activated venv (or a pipx install): the bare name runs it
    assert program_name(str(script), cwd=cwd, path=str(venv_bin)) == "pracsuite-ingest"
    assert program_name("pracsuite-ingest", cwd=cwd, path=str(venv_bin)) == "pracsuite-ingest"
    assert program_name("/x/lib/pracsuite_ingest/__main__.py", cwd=cwd, path=None,
                        executable="/usr/bin/python3") == \
        "/usr/bin/python3 -m pracsuite_ingest"


def test_the_demo_s_closing_hint_names_the_program_that_ran() -> None:
    text = closing_text(30, {"missing": 1}, Path("demo-out/manifest.csv"),
                        ".venv/bin/pracsuite-ingest")
    assert "  .venv/bin/pracsuite-ingest sandbox --config-out sandbox.toml\n" in text
    assert "  .venv/bin/pracsuite-ingest run --config sandbox.toml" in text
    assert "\n  pracsuite-ingest" not in text
    assert closing_text(1, {}, Path("m.csv")).startswith("demo ok: all 1 good file validated")


def test_an_interrupted_run_says_how_to_resume() -> None:
    assert resume_text(1) == ("interrupted: 1 item is pending; the state file keeps what was "
                              "done. Run the same command again to resume.")
    assert "12 items are pending" in resume_text(12)
