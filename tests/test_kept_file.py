"""A small file stays open from its check to its upload, with the bytes the check hashed
(issue 23: one thread hand-off a file instead of two). The upload sends those bytes
only while the descriptor still shows the file checked, and every kept file is closed,
whoever stops waiting for it."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from pracsuite_ingest.formbody import FileChanged, still_checked
from pracsuite_ingest.local_check import Handover, check_local, close_kept, inspect_file
from pracsuite_ingest.models import LocalFile, Row

KEEP = 256 * 1024


def row_for(path: Path) -> Row:
    return Row(2, "5", str(path), path.name)


async def kept(path: Path, keep: int = KEEP) -> LocalFile:
    local = await check_local(row_for(path), keep_bytes=keep)
    assert isinstance(local, LocalFile), local
    return local


async def test_a_small_file_comes_back_open_with_the_bytes_it_was_hashed_from(
        tmp_path: Path) -> None:
    path = tmp_path / "letter.pdf"
    path.write_bytes(os.urandom(16 * 1024))
    local = await kept(path)
    assert local.opened is not None
    assert local.opened.data == path.read_bytes()
    assert hashlib.sha256(local.opened.data).hexdigest() == local.sha256
    assert still_checked(local.opened, local) == path.read_bytes()
    close_kept(local)
    assert local.opened.fh.closed


async def test_no_file_is_kept_open_unless_asked_not_even_an_empty_one(tmp_path: Path
                                                                      ) -> None:
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    local = await check_local(row_for(path))  # keep_bytes=0: a dry run, other callers
    assert isinstance(local, LocalFile) and local.size == 0
    assert local.opened is None


async def test_a_file_over_the_limit_is_closed_after_its_check(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(os.urandom(5000))
    local = await kept(path, keep=4999)
    assert local.opened is None
    assert local.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("change", ["append", "truncate", "rewrite", "replace_by_link",
                                    "renamed_over"])
async def test_a_kept_file_changed_since_its_check_is_not_sent(tmp_path: Path,
                                                               change: str) -> None:
    path = tmp_path / "letter.pdf"
    path.write_bytes(os.urandom(1000))
    other = tmp_path / "other patient.pdf"
    other.write_bytes(os.urandom(1000))
    local = await kept(path)
    assert local.opened is not None
    if change == "append":
        with path.open("ab") as fh:
            fh.write(b"more")
    elif change == "truncate":
        os.truncate(path, 10)
    elif change == "rewrite":  # same size, other bytes, in place, a moment later
        st = path.stat()
        with path.open("r+b") as fh:
            fh.write(os.urandom(1000))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    elif change == "replace_by_link":
        path.unlink()
        path.symlink_to(other)
    else:
        other.rename(path)
    try:
        with pytest.raises(FileChanged):
            still_checked(local.opened, local)
    finally:
        close_kept(local)


def test_a_kept_file_given_after_its_caller_stopped_waiting_is_closed(tmp_path: Path
                                                                      ) -> None:
    path = tmp_path / "letter.pdf"
    path.write_bytes(b"x" * 100)
    handover = Handover()
    handover.abandon()  # the check's caller was cancelled first
    local = inspect_file(row_for(path), path, keep_bytes=KEEP, handover=handover)
    assert isinstance(local, LocalFile) and local.opened is not None
    assert local.opened.fh.closed


def test_a_kept_file_given_before_its_caller_stopped_waiting_is_closed(tmp_path: Path
                                                                       ) -> None:
    path = tmp_path / "letter.pdf"
    path.write_bytes(b"x" * 100)
    handover = Handover()
    local = inspect_file(row_for(path), path, keep_bytes=KEEP, handover=handover)
    assert isinstance(local, LocalFile) and local.opened is not None
    assert not local.opened.fh.closed
    handover.abandon()  # cancelled while the result was on its way
    assert local.opened.fh.closed


async def test_an_empty_file_refused_by_the_setting_is_not_left_open(tmp_path: Path
                                                                     ) -> None:
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    opened_before = len(os.listdir("/proc/self/fd"))
    result = await check_local(row_for(path), keep_bytes=KEEP, empty_files="refuse")
    assert isinstance(result, str)
    await asyncio.sleep(0)
    assert len(os.listdir("/proc/self/fd")) == opened_before
