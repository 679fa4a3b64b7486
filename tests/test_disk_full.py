"""Disk full: the state file's disk fills up in the middle of a run. The run stops with
exit 3 and says so; nothing is lost: the next run, once there is room, finishes with
every row validated and no file sent twice. On a real small file system (a tmpfs
mounted by the test: root only)."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

pytestmark = pytest.mark.slow

ROWS = 120


def _cannot(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI runs as root and must be able to mount a tmpfs")
    print(f"SKIPPED: {reason}")
    pytest.skip(reason)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, unmounted after the test."""
    if os.geteuid() != 0:
        _cannot("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        _cannot(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_stops_the_run_with_exit_3_and_the_next_run_sends_nothing_twice(
        tmp_path: Path, small_fs: Path) -> None:
    # Leave the state file 160 KiB: room for the first rows (their WAL frames), not all.
    filler = small_fs / "filler"
    filler.write_bytes(b"\1" * (16 * 1024 * 1024 - 160 * 1024))
    async with Sandbox(SandboxOptions(validation_delay_s=0.1)) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, ROWS, ["1", "2", "3"],
                                                       size=100))
        cfg = config(tmp_path, sb, state={"path": str(small_fs / "state.db")})
        first = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                              cwd=tmp_path)
        stored_by_first = sb.stats()["uploads_stored"]
        print(f"the first run stored {stored_by_first} of {ROWS} files")
        filler.unlink()  # room again
        second = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        stats = sb.stats()
    assert first.code == 3, (first.code, first.stderr[-3000:])
    assert "disk is full" in first.stderr, first.stderr[-2000:]
    assert 0 < stored_by_first < ROWS, stored_by_first  # it did stop in the middle
    assert second.code == 0, second.stderr[-3000:]
    report = json.loads((tmp_path / "reports" / "latest.json").read_text())
    assert Counter(it["status"] for it in report["items"]) <= Counter(
        validated=ROWS, skipped=ROWS)
    assert len(report["items"]) == ROWS
    # Every file stored once, and became one record, across both runs.
    assert stats["requests"]["s3_post"] == {"204": ROWS}
    keys = Counter(r["key"] for c in stats["records_created"].values() for r in c["records"])
    assert stats["records_created_total"] == ROWS and set(keys.values()) == {1}
