"""What a person at an 80x24 terminal sees, read from a real terminal (tmux): the live
display during a run against the sandbox (a bytes total, not `?`; validated files counted,
not listed), Ctrl-C saying how to resume, and `status` at 80 columns afterwards."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from e2e import config, make_files, write_manifest
from needs import program
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

pytestmark = pytest.mark.slow
LIMIT_S = 240.0  # generous: the machine may be loaded


class Tmux:
    """A private tmux server (its own socket) with 80x24 sessions."""

    def __init__(self, exe: str, socket: str) -> None:
        self.exe, self.socket = exe, socket

    async def _tmux(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            self.exe, "-L", self.socket, *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    async def start(self, name: str, command: str, cwd: Path) -> None:
        # the pane stays open (cat) after the command, so its last screen can be read
        await self._tmux("new-session", "-d", "-s", name, "-x", "80", "-y", "24", "-c",
                         str(cwd), f"{command}; echo \"exit $?\"; exec cat")

    async def screen(self, name: str, *, history: bool = False) -> str:
        # the whole history with wrapped lines joined, or the screen as it is
        return await self._tmux("capture-pane", "-p", "-t", name,
                                *(["-J", "-S", "-"] if history else []))

    async def keys(self, name: str, *keys: str) -> None:
        await self._tmux("send-keys", "-t", name, *keys)

    async def until(self, name: str, ready: Callable[[str], bool], what: str) -> str:
        deadline = time.monotonic() + LIMIT_S
        while True:
            text = await self.screen(name)
            if ready(text):
                return text
            assert time.monotonic() < deadline, f"never saw {what}; the screen:\n{text}"
            await asyncio.sleep(0.2)  # the next look at the screen, not a wait for a result

    async def stop(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            self.exe, "-L", self.socket, "kill-server", stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        await proc.wait()


@asynccontextmanager
async def tmux_server() -> AsyncIterator[Tmux]:
    tmux = Tmux(program("tmux", package="tmux"), f"pracsuite-test-{os.getpid()}")
    try:
        yield tmux
    finally:
        await tmux.stop()


BYTES_ROW = re.compile(r"^bytes\s+([\d.]+)/([\d.]+) ([kMG]?B|bytes) sent", re.MULTILINE)


def sending(screen: str) -> bool:
    found = BYTES_ROW.search(screen)
    return found is not None and float(found.group(1)) > 0


async def test_an_operator_s_80x24_terminal_during_a_run_at_ctrl_c_and_in_status(
        tmp_path: Path) -> None:
    options = SandboxOptions(validation_delay_s=0.2)
    async with Sandbox(options) as sb, tmux_server() as tmux:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 60, ["41", "42"],
                                                       size=60_000))
        # slow enough to be watched: 3.6 MB at 150 kB/s
        cfg = config(tmp_path, sb, upload={"max_bytes_per_second": 150_000},
                     log={"level": "info", "format": "auto"})
        cli = f"{shlex.quote(sys.executable)} -m pracsuite_ingest"
        await tmux.start("run", f"{cli} run --config {cfg} --manifest {manifest}", tmp_path)
        live = await tmux.until("run", lambda s: sending(s) or "exit " in s,
                                "the display sending bytes")
        assert "exit " not in live, live
        lines = live.splitlines()
        assert all(len(line) <= 80 for line in lines)
        assert "?" not in next(line for line in lines if line.startswith("bytes"))
        assert re.search(r"^files .* \d+/60 ", live, re.MULTILINE), live
        await tmux.keys("run", "C-c")
        end = await tmux.until("run", lambda s: "exit " in s, "the run's end")
        history = await tmux.screen("run", history=True)
        await tmux.start("status", f"{cli} status --config {cfg}", tmp_path)
        status = await tmux.until("status", lambda s: "exit " in s, "status")
    assert "exit 130" in end, history
    assert "Run the same command again to resume." in history, history
    assert re.search(r"interrupted: [\d,]+ items? (is|are) pending", history)
    assert "item validated" not in history  # counted on the display, not listed
    run_id = re.search(r"run (\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ-[0-9a-f]+):", history)
    assert run_id is not None, history
    screen = status.splitlines()
    assert all(len(line) <= 80 for line in screen), status
    assert "…" not in status
    assert any(line.startswith(run_id.group(1) + "  interrupted  ") for line in screen), status
    assert re.search(r"^    60 items: .*pending \d+", status, re.MULTILINE), status
