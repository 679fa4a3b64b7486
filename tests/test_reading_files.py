"""Reading files: never more than the 100 MB limit plus one byte of anything; a "file"
that gives more bytes than its size (under /proc) is invalid; a char device is never
opened; a SIGTERM while files are being hashed ends the run with every row in the
report."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from e2e import config, run_cli
from pracsuite_ingest import MAX_FILE_BYTES
from pracsuite_ingest.local_check import Stopped, hash_file
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

pytestmark = pytest.mark.slow


def _manifest(root: Path, paths: list[str]) -> Path:
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["client_id", "path", "file_name"])
        for n, path in enumerate(paths):
            writer.writerow(["1", path, f"row{n}.pdf"])
    return manifest


def test_hashing_reads_at_most_the_limit_and_stops_when_asked(tmp_path: Path) -> None:
    size, _ = hash_file(Path("/proc/self/pagemap"), 4096)  # endless, as far as we care
    assert size == 4096
    big = tmp_path / "big.pdf"
    with big.open("wb") as fh:
        fh.truncate(8 << 20)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        hash_file(big, MAX_FILE_BYTES + 1, stop)


async def test_endless_and_special_files_are_invalid_and_the_run_ends(tmp_path: Path) -> None:
    good = tmp_path / "good.pdf"
    good.write_bytes(b"%PDF-1.4 good")
    over = tmp_path / "over.pdf"
    with over.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)
    manifest = _manifest(tmp_path, ["/proc/self/pagemap", "/dev/zero", str(good), str(over),
                                    "/proc/self/status"])
    async with Sandbox(SandboxOptions(validation_delay_s=0.1)) as sb:
        cfg = config(tmp_path, sb)
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path, limit_s=120)
    assert result.code == 1, result.stderr[-2000:]
    items = result.report(tmp_path / "reports")["items"]
    assert [it["status"] for it in items] == ["invalid", "invalid", "validated", "invalid",
                                              "invalid"]
    assert "more bytes than its size" in items[0]["error"]
    assert "character device" in items[1]["error"]
    assert "104,857,601 bytes" in items[3]["error"]
    assert "more bytes than its size" in items[4]["error"]


async def test_sigterm_while_hashing_ends_with_every_row_in_the_report(tmp_path: Path) -> None:
    rows = 12
    paths = []
    for n in range(rows):  # sparse: 100 MB each to hash, nothing on disk
        path = tmp_path / f"scan{n}.pdf"
        with path.open("wb") as fh:
            fh.truncate(MAX_FILE_BYTES - 1)
            fh.write(bytes([n]))
        paths.append(str(path))
    manifest = _manifest(tmp_path, paths)
    async with Sandbox(SandboxOptions(validation_delay_s=0.1)) as sb:
        cfg = config(tmp_path, sb, upload={"grace_s": 0})
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pracsuite_ingest", "run", "--config", str(cfg),
            "--manifest", str(manifest), cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        # The first API call comes once the first file is hashed; others are hashing.
        while not any(sb.stats()["requests"][k] for k in ("list", "presign")):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 130, err.decode()[-2000:]
    report = (tmp_path / "reports" / "latest.json")
    items = json.loads(report.read_text())["items"]
    assert len(items) == rows, [it["path"] for it in items]
    assert {it["status"] for it in items} <= {"validated", "pending", "missing"}
