"""Untrusted folders: links are not followed out (or at all unless asked), special files
are never opened, unreadable entries are reported, and `input.root` confines paths."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from pathlib import Path

import pytest

from pracsuite_ingest import localfs
from pracsuite_ingest.local_check import check_local
from pracsuite_ingest.localfs import NotRegularFile, open_regular, private_dir, private_file
from pracsuite_ingest.models import LocalFile, Row
from pracsuite_ingest.scan import read_rows

# Opening a FIFO without a writer blocks forever: a test that hangs here has failed.
pytestmark = pytest.mark.timeout(60)


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def by_name(rows: list[Row]) -> dict[str, Row]:
    return {r.file_name: r for r in rows}


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """<tmp>/src/42/... with links in and out, and <tmp>/outside/secret.txt."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    write(src / "42" / "ok.pdf")
    write(src / "42" / "sub" / "inner.pdf")
    write(outside / "secret.txt", b"not yours")
    (src / "42" / "out.txt").symlink_to(outside / "secret.txt")
    (src / "42" / "in.pdf").symlink_to(src / "42" / "ok.pdf")
    (src / "42" / "outdir").symlink_to(outside, target_is_directory=True)
    (src / "43").symlink_to(src / "42" / "sub", target_is_directory=True)
    (src / "42" / "sub" / "loop").symlink_to(src / "42", target_is_directory=True)
    (src / "42" / "dangling.pdf").symlink_to(tmp_path / "gone.pdf")
    return src, outside


def test_links_are_invalid_rows_unless_following_is_asked(tree: tuple[Path, Path]) -> None:
    src, _ = tree
    rows = list(read_rows(None, src))
    good = sorted((r.client_id, r.file_name) for r in rows if r.problem is None)
    assert good == [("42", "inner.pdf"), ("42", "ok.pdf")]
    links = {r.file_name: r.problem for r in rows if r.problem}
    assert set(links) == {"out.txt", "in.pdf", "outdir", "dangling.pdf", "43", "loop"}
    assert all("symbolic link not followed" in (p or "") for p in links.values())
    assert all("follow_symlinks" in (p or "") for p in links.values())


def test_followed_links_never_leave_the_source_folder(tree: tuple[Path, Path]) -> None:
    src, outside = tree
    rows = list(read_rows(None, src, follow_symlinks=True))
    named = by_name(rows)
    assert "outside the source folder" in (named["out.txt"].problem or "")
    assert "outside the source folder" in (named["outdir"].problem or "")
    assert "outside the source folder" in (named["dangling.pdf"].problem or "")
    # inside: followed, read at the resolved path, the client is the link's folder
    assert named["in.pdf"].problem is None and named["in.pdf"].path == str(src / "42" / "ok.pdf")
    # a folder is scanned once: the loop back to 42, and 43 -> 42/sub, are reported instead
    assert "scanned already" in (named["loop"].problem or "")
    assert "scanned already" in (named["43"].problem or "")
    assert [r.client_id for r in rows if r.file_name == "inner.pdf"] == ["42"]
    assert not any(str(outside) in r.path and r.problem is None for r in rows)


def test_a_link_into_the_tree_gives_its_folder_as_client(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "archive" / "2020" / "x.pdf")
    (src / "11").symlink_to(src / "archive" / "2020", target_is_directory=True)
    rows = [(r.client_id, r.file_name, r.problem) for r in read_rows(None, src,
                                                                       follow_symlinks=True)]
    assert rows[0] == ("11", "x.pdf", None)  # "11" sorts first: met there first
    assert rows[1][:2] == ("archive", "2020") and "through a symbolic link" in str(rows[1][2])


async def test_special_files_are_invalid_and_never_opened(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "7" / "a.pdf")
    os.mkfifo(src / "7" / "pipe.pdf")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "7" / "sock.pdf"))
    try:
        rows = by_name(list(read_rows(None, src)))
        assert "a FIFO (named pipe)" in (rows["pipe.pdf"].problem or "")
        assert "a socket" in (rows["sock.pdf"].problem or "")
        # and a manifest naming them, or a device, is refused before any open
        manifest = write(tmp_path / "m.csv", (f"client_id,path,file_name\n7,{src}/7/pipe.pdf,\n"
                                              f"7,{src}/7/sock.pdf,\n"
                                              "7,/dev/zero,zero.bin\n").encode())
        results = [await check_local(r) for r in read_rows(manifest, None)]
    finally:
        sock.close()
    assert results[0] == "not a regular file (a FIFO (named pipe)); not opened"
    assert results[1] == "not a regular file (a socket); not opened"
    assert results[2] == "not a regular file (a character device); not opened"


def test_a_fifo_swapped_in_after_the_stat_is_refused_on_the_descriptor(tmp_path: Path) -> None:
    fifo = tmp_path / "late.pdf"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile, match="FIFO"):
        open_regular(fifo)  # O_NONBLOCK: returns at once instead of waiting for a writer
    with pytest.raises(NotRegularFile, match="folder"):
        open_regular(tmp_path)
    with open_regular(write(tmp_path / "fine.pdf", b"data")) as fh:
        assert fh.read() == b"data"


async def test_the_check_judges_the_file_it_opened_not_what_the_path_became(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "1" / "a.pdf", b"checked")
    real_open = os.open

    def open_then_swap(p: object, *args: object, **kwargs: object) -> int:
        fd = real_open(p, *args, **kwargs)  # type: ignore[arg-type]
        if Path(str(p)) == path:
            path.unlink()
            os.mkfifo(path)
        return fd

    monkeypatch.setattr(os, "open", open_then_swap)  # in the check's thread
    result = await check_local(Row(1, "1", str(path), "a.pdf"))
    monkeypatch.undo()
    assert isinstance(result, LocalFile)
    assert result.sha256 == hashlib.sha256(b"checked").hexdigest()
    # The identity is the opened file's: the path now names another inode (a FIFO),
    # which the upload refuses (tests/test_proof.py sends such swaps).
    assert result.identity is not None and result.identity.ino != os.lstat(path).st_ino


def _deny(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """Make `target` unreadable: chmod 0 (which root ignores, so also refuse it there)."""
    target.chmod(0)
    if os.geteuid() == 0:
        real_scandir, real_open = os.scandir, os.open

        def scandir(path: object = ".") -> object:
            if Path(str(path)) == target:
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)  # type: ignore[call-overload]

        def os_open(path: object, flags: int, mode: int = 0o777, **kw: object) -> int:
            if Path(str(path)) == target:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, mode)  # type: ignore[arg-type]

        monkeypatch.setattr(localfs.os, "scandir", scandir)
        monkeypatch.setattr(localfs.os, "open", os_open)


async def test_unreadable_folders_and_files_are_rows_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    write(src / "5" / "a.pdf")
    locked_dir = src / "5" / "locked"
    write(locked_dir / "hidden-from-us.pdf")
    locked_file = write(src / "6" / "b.pdf")
    _deny(monkeypatch, locked_dir)
    _deny(monkeypatch, locked_file)
    try:
        rows = list(read_rows(None, src))
        results = {r.file_name: await check_local(r) for r in rows}
    finally:
        locked_dir.chmod(0o700)
        locked_file.chmod(0o600)
    assert isinstance(results["a.pdf"], LocalFile)
    assert results["locked"] == ("folder not readable (Permission denied); the files in it "
                                 "were not scanned")
    assert results["b.pdf"] == "file not readable (permission denied)"
    assert "hidden-from-us.pdf" not in results


def test_names_that_are_not_utf8_are_rows_that_can_be_stored(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "8" / "fine.pdf")
    bad = os.fsencode(src / "8") + b"/caf\xe9.pdf"
    with open(bad, "wb") as fh:
        fh.write(b"x")
    rows = list(read_rows(None, src))
    problems = [r for r in rows if r.problem]
    assert len(problems) == 1 and "not valid UTF-8" in (problems[0].problem or "")
    problems[0].path.encode("utf-8")  # U+FFFD where the byte was: storable, reportable


def test_a_missing_source_folder_is_a_row_not_an_empty_run(tmp_path: Path) -> None:
    (row,) = read_rows(None, tmp_path / "nope")
    assert "source folder cannot be read" in (row.problem or "")


def test_input_root_confines_manifest_paths(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "1" / "a.pdf")
    write(tmp_path / "elsewhere.pdf")
    (root / "1" / "link.pdf").symlink_to(tmp_path / "elsewhere.pdf")
    manifest = write(root / "m.csv", b"client_id,path\n1,1/a.pdf\n1,../elsewhere.pdf\n"
                                     b"1,/etc/passwd.txt\n1,1/link.pdf\n1,1/../1/a.pdf\n")
    rows = list(read_rows(manifest, None, root=root))
    assert [r.problem is None for r in rows] == [True, False, False, False, True]
    assert all("outside input.root" in (r.problem or "") for r in rows[1:4])
    assert rows[1].problem is not None and rows[1].problem.startswith("line 3: ")
    # a directory walk under a root that does not hold it: every file refused
    assert all(r.problem for r in read_rows(None, root, root=tmp_path / "other"))


def test_the_workers_own_files_and_folders_are_private(tmp_path: Path) -> None:
    private_file(tmp_path / "new" / "deeper" / "state.db")
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new" / "deeper").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new" / "deeper" / "state.db").stat().st_mode) == 0o600
    loose = write(tmp_path / "old.db")
    loose.chmod(0o644)
    private_file(loose)  # an older file of ours, readable by others, is tightened
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    private_dir(shared / "reports")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755  # not ours to change
    assert stat.S_IMODE((shared / "reports").stat().st_mode) == 0o700


async def test_the_settings_reach_the_scan(tmp_path: Path) -> None:
    """input.follow_symlinks and input.root, set in the environment, steer a real run."""
    from e2e import run_cli

    src = tmp_path / "src"
    write(src / "3" / "a.pdf")
    (src / "3" / "b.pdf").symlink_to(src / "3" / "a.pdf")

    async def dry_run(**env: str) -> dict[str, str]:
        result = await run_cli("run", "--dry-run", "--source-dir", str(src), "--state",
                               str(tmp_path / "s.db"), "--report-dir", str(tmp_path / "r"),
                               "--log-format", "json", cwd=tmp_path, env=env)
        assert result.code in (0, 1), result.stderr[-2000:]
        items = result.report(tmp_path / "r", "dry-run")["items"]
        return {it["file_name"]: it["status"] for it in items}

    assert await dry_run() == {"a.pdf": "pending", "b.pdf": "invalid"}
    # followed: b.pdf (a link inside the folder) would be sent under its own name
    assert await dry_run(PRACSUITE_INGEST_INPUT__FOLLOW_SYMLINKS="true") == {
        "a.pdf": "pending", "b.pdf": "pending"}
    assert await dry_run(PRACSUITE_INGEST_INPUT__ROOT=str(tmp_path / "elsewhere")) == {
        "a.pdf": "invalid", "b.pdf": "invalid"}
