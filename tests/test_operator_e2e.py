"""What an operator sees when running the CLI for real against the sandbox: the logs a
scheduler stores, the progress a person watches, the plan of a dry run, a trial run,
the `check` command and the metrics file."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

pytestmark = pytest.mark.slow
ANSI = re.compile(r"\x1b\[")
ITEM_EVENTS = {"item validated", "item invalid", "item failed", "item skipped",
               "item carried to reconcile", "upload outcome unknown"}


async def test_logs_off_a_terminal_are_json_lines_bound_to_run_item_and_stage(
        tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.1, fail_rate_500=0.25,
                                      seed=5)) as sb:
        rows = make_files(tmp_path, 24, ["21", "22"])
        rows.append({"client_id": "21", "path": "files/21/gone.pdf"})
        manifest = write_manifest(tmp_path, rows)
        textfile = tmp_path / "node" / "pracsuite.prom"
        cfg = config(tmp_path, sb, log={"level": "info", "format": "auto"},
                     metrics={"textfile": str(textfile)})
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
    assert result.code == 1, result.stderr[-2000:]  # the missing file is invalid
    assert not ANSI.search(result.stdout + result.stderr)
    events = [json.loads(line) for line in result.stderr.splitlines()]
    run_id = result.report(tmp_path / "reports")["run_id"]
    assert events and all(e["run_id"] == run_id for e in events)
    per_item = [e for e in events if e["event"] in ITEM_EVENTS]
    assert len(per_item) == 25
    for e in per_item:
        assert {"client_id", "item", "stage"} <= e.keys(), e
    info_per_item = Counter((e["client_id"], e["item"]) for e in events
                            if e["level"] == "info" and "item" in e)
    assert max(info_per_item.values()) == 1  # at most one INFO line per file
    invalid = next(e for e in per_item if e["event"] == "item invalid")
    assert invalid["level"] == "warning" and invalid["reason"] == "file not found"
    retries = [e for e in events if e["event"] == "retrying"]
    assert retries, "the sandbox's 500s should have caused retries"
    assert all(e["level"] == "warning" for e in retries)
    assert any(e.get("request_id") and e.get("stage") and e.get("item") for e in retries)
    # patient file names are health data: not in the logs unless asked for
    assert not any({"file_name", "path"} & e.keys() for e in events)
    assert "letter.pdf" not in result.stderr and "FBC" not in result.stderr
    # the scheduler's metrics
    families = {f.name: f for f in text_string_to_metric_families(textfile.read_text())}
    validated = next(s for s in families["pracsuite_ingest_items"].samples
                     if s.labels == {"status": "validated"})
    assert validated.value == 24
    assert families["pracsuite_ingest_retries"].samples[0].value == len(retries)
    assert families["pracsuite_ingest_exit_code"].samples[0].value == 1
    assert "pracsuite_ingest_last_success_timestamp_seconds" not in families


async def test_file_names_are_logged_only_when_the_operator_opts_in(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.05)) as sb:
        rows = make_files(tmp_path, 4, ["23"])
        manifest = write_manifest(tmp_path, rows)
        cfg = config(tmp_path, sb, log={"level": "info", "format": "json", "file_names": True})
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
    assert result.code == 0, result.stderr[-2000:]
    named = {json.loads(line).get("file_name") for line in result.stderr.splitlines()}
    assert "00000 letter.pdf" in named and "00003 心电图.png" in named


async def test_a_trial_run_then_a_dry_run_plan_of_the_rest(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.05)) as sb:
        rows = make_files(tmp_path, 12, ["31", "32", "33"], size=2000)
        rows.append(dict(rows[0]))  # a repeated row (of a file not sent yet)
        manifest = write_manifest(tmp_path, rows)
        cfg = config(tmp_path, sb)
        trial = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                              "--client", "32", "--client", "33", "--limit", "3", cwd=tmp_path)
        trial_report = trial.report(tmp_path / "reports")
        plan = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                             "--dry-run", cwd=tmp_path)
        presigned = sb.stats()["presigned"]
    assert trial.code == 0, trial.stderr[-2000:]
    assert [it["extra"]["note"] for it in trial_report["items"]] == ["n1", "n2", "n4"]
    assert "trial run (client 32, 33; first 3 rows)" in trial.stdout
    assert "not in this report" in trial.stdout
    assert presigned == 3  # the dry run sent nothing
    assert plan.code == 0, plan.stderr[-2000:]
    out = plan.stdout
    assert "dry run: nothing was sent" in out
    assert re.search(r"send\s+9 files, 18\.\d KB, for 3 clients", out)
    assert re.search(r"skip\s+3 files already validated by an earlier run", out)
    assert re.search(r"skip\s+1 row repeating an earlier row", out)
    assert re.search(r"^\s+31\s+4\s.*\s1\s+0\s+0$", out, re.M)  # 4 to send, 1 repeated
    assert re.search(r"^\s+32\s+2\s.*\s2\s+0\s+0$", out, re.M)  # 2 to send, 2 skipped


@pytest.mark.parametrize(("change", "code", "says"), [
    ({}, 0, "accepted both keys"),
    ({"vendor_api_key": "not-the-vendor-key"}, 3, "api.vendor_api_key"),
    ({"practice_api_key": "not-the-practice-key"}, 3, "api.practice_api_key"),
    ({"requests_per_secnod": 3}, 2, "api.requests_per_secnod"),
])
async def test_check_proves_both_keys_and_names_the_one_refused(
        tmp_path: Path, change: dict[str, object], code: int, says: str) -> None:
    async with Sandbox(SandboxOptions()) as sb:
        cfg = config(tmp_path, sb, api=change)
        result = await run_cli("check", "--config", str(cfg), cwd=tmp_path)
        secrets = (sb.vendor_key, sb.practice_key)
    assert result.code == code, result.stdout + result.stderr
    assert says in (result.stdout if code == 0 else result.stderr)
    if code == 3:
        other = ({"api.vendor_api_key", "api.practice_api_key"} - {says}).pop()
        assert other not in result.stderr  # the message names the one to check
    for text in (*secrets, *[v for v in change.values() if isinstance(v, str)]):
        assert text not in result.stdout + result.stderr


async def run_in_terminal(*args: str, cwd: Path) -> tuple[int, str]:
    """The CLI with stdin, stdout and stderr on a pseudo-terminal, as a person runs it."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
    env.update(TERM="xterm-256color", COLUMNS="110", LINES="40")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pracsuite_ingest", *args, cwd=cwd, env=env,
        stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    loop = asyncio.get_running_loop()
    chunks = []
    while True:
        try:
            data = await loop.run_in_executor(None, os.read, controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    code = await asyncio.wait_for(proc.wait(), 60)
    return code, b"".join(chunks).decode(errors="replace")


async def test_progress_shows_on_a_terminal_unless_quiet_or_json(tmp_path: Path) -> None:
    async with Sandbox(SandboxOptions(validation_delay_s=0.3)) as sb:
        rows = make_files(tmp_path, 15, ["41", "42"])
        manifest = write_manifest(tmp_path, rows)
        shown: dict[str, str] = {}
        for label, extra in (("tty", []), ("quiet", ["--quiet"]),
                             ("json", ["--log-format", "json"])):
            cfg = config(tmp_path, sb, log={"level": "info", "format": "auto"},
                         state={"path": str(tmp_path / f"{label}.db")})
            code, shown[label] = await run_in_terminal(
                "run", "--config", str(cfg), "--manifest", str(manifest), *extra, cwd=tmp_path)
            assert code == 0, shown[label][-2000:]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown["tty"])
    assert "15/15" in plain and "bytes" in plain
    assert "awaiting validation" in plain and "validated 15" in plain
    assert re.search(r"reconcile: \d+ awaited · \d+ validated so far · gives up at "
                     r"\d\d:\d\d if PracSuite has not shown them", plain)
    assert "eta 0:00:00" not in plain and " left" not in plain
    # the last frame, drawn as the display stops, holds the outcome
    bytes_row = plain.rindex("bytes ")
    last = plain[plain.rindex("files ", 0, bytes_row):plain.index("run ", bytes_row)]
    assert "15/15" in last and "validated 15" in last
    assert "reconcile: done: every upload validated (15 this run)" in last
    assert "run " in plain and "report:" in plain
    for label in ("quiet", "json"):
        assert "awaiting validation" not in shown[label], label
    json_lines = [line for line in shown["json"].splitlines() if line.startswith("{")]
    assert json_lines and all(json.loads(line) for line in json_lines)
