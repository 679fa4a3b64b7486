"""`pracsuite-ingest sandbox` as an operator starts it: what it prints can be pasted into
a config as it is, `--config-out` writes a whole one, and `--help` shows the defaults."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from e2e import run_cli

pytestmark = pytest.mark.slow
LAST_LINE = "# the sandbox runs until Ctrl-C"


@asynccontextmanager
async def sandbox_process(cwd: Path, *args: str) -> AsyncIterator[str]:
    """`pracsuite-ingest sandbox --port 0 ARGS` as a child process; yields what it printed
    up to its last line, and stops it with Ctrl-C (SIGINT) afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pracsuite_ingest", "sandbox", "--port", "0", *args, cwd=cwd,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    printed: list[str] = []
    try:
        while not printed or printed[-1] != LAST_LINE:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if not line:
                err = await proc.stderr.read()
                pytest.fail(f"the sandbox exited: {printed} {err.decode()[-2000:]}")
            printed.append(line.decode().rstrip("\n"))
        yield "\n".join(printed) + "\n"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 60)


async def test_the_printed_api_block_pasted_into_a_config_passes_check(tmp_path: Path) -> None:
    out = tmp_path / "sandbox.toml"
    async with sandbox_process(tmp_path, "--config-out", str(out)) as printed:
        pasted = tmp_path / "pasted.toml"
        pasted.write_text(printed)  # everything it printed, as it is
        check_pasted = await run_cli("check", "--config", str(pasted), cwd=tmp_path)
        check_written = await run_cli("check", "--config", str(out), cwd=tmp_path)
    assert "[api]\nbase_url = " in printed
    assert check_pasted.code == 0, check_pasted.stdout + check_pasted.stderr
    assert "accepted both keys" in check_pasted.stdout
    assert check_written.code == 0, check_written.stdout + check_written.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds the keys
    written = out.read_text()
    assert "Fill in [input]" in written and 'manifest = ""' in written
    # the whole config's state and reports are the sandbox's own, not a practice's
    assert (tmp_path / "sandbox-reports").is_dir()  # `check` made the report folder


async def test_config_out_never_overwrites_a_config_it_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "practice.toml"
    mine.write_text('[api]\nbase_url = "https://api.pracsuite.com/v1"\n')
    result = await run_cli("sandbox", "--port", "0", "--config-out", str(mine), cwd=tmp_path)
    assert result.code == 2, result.stdout + result.stderr
    assert "was not written by the sandbox" in result.stderr
    assert mine.read_text() == '[api]\nbase_url = "https://api.pracsuite.com/v1"\n'


async def test_sandbox_help_shows_the_defaults(tmp_path: Path) -> None:
    result = await run_cli("sandbox", "--help", cwd=tmp_path)
    assert result.code == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for shown in ("--validation-delay SECONDS time from an upload to its record (default: 0.5)",
                  "(default: 8700)", "(default: 127.0.0.1)", "(default: 0.0)",
                  "(default: patient_attachments)", "(default: 1-50,1001)", "--config-out"):
        assert shown in text, shown


# As a non-interactive shell starts a background job (`pracsuite-ingest sandbox &`):
# SIGINT ignored on entry, so Python installs no KeyboardInterrupt handler of its own.
IGNORING_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                   "os.execv(sys.executable, [sys.executable, '-m', 'pracsuite_ingest', "
                   "*sys.argv[1:]])")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_the_sandbox_stops_at_sigint_or_sigterm_even_started_with_sigint_ignored(
        tmp_path: Path, sig: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", IGNORING_SIGINT, "sandbox", "--port", "0", cwd=tmp_path,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        line = b""
        while line.decode().rstrip("\n") != LAST_LINE:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "the sandbox exited before serving"
        proc.send_signal(sig)
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 130  # stopped as asked, after closing its servers
