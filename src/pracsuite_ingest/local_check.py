"""A row's file, checked before a request is spent on it: a regular file inside
`input.root`, not one of the worker's own, of an allowed size and name, hashed (sha256)
in a worker thread. `check_local` turns a row into a `LocalFile` or a reason; the rows
themselves come from `scan.py`."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path
from typing import BinaryIO

import aiofiles.os

from pracsuite_ingest import MAX_FILE_BYTES, own_files
from pracsuite_ingest.client_ids import client_id_problem
from pracsuite_ingest.localfs import (
    FOLLOW_HINT,
    IsLink,
    NotRegularFile,
    OutsideRoot,
    identity_text,
    open_regular,
    real_path_of,
    special_kind,
)
from pracsuite_ingest.logs import get_logger
from pracsuite_ingest.models import Identity, LocalFile, Opened, Row
from pracsuite_ingest.refusals import empty_file_problem
from pracsuite_ingest.visible import name_problem

HASH_CHUNK = 1 << 20
# A hard link is the file itself: where its other names are cannot be told, so one
# inside input.root may be a file placed there from outside. Warned, not refused:
# backup trees (rsnapshot, cp -al) are hard links throughout, the kernel lets a user
# hard-link only files they may read and write (fs.protected_hardlinks), and the
# worker's own files are refused whatever names them (own_files.py).
HARD_LINK_NOTE = ("a file inside input.root has other hard links, which may lie outside "
                  "it; it is sent as any other file")

def file_name_problem(file_name: str) -> str | None:
    """Why PracSuite would refuse this `file_name`, or None."""
    if not file_name:
        return "no file name"
    if "/" in file_name or "\\" in file_name:
        return "file_name must not contain a folder separator"
    control = next((c for c in file_name if ord(c) < 32 or ord(c) == 127), None)
    if control is not None:
        what = {"\t": "a tab", "\n": "a line break", "\r": "a carriage return"}.get(
            control, "a control character")
        return (f"file_name contains {what} (U+{ord(control):04X}), which is not sent; "
                "rename the file or fix the manifest's file_name")
    invisible = name_problem(file_name)  # C1, bidi and zero-width characters
    if invisible:
        return invisible
    stem, dot, ext = file_name.rpartition(".")
    if not dot or not stem or not ext.strip():
        return "file name has no extension (PracSuite requires one, e.g. .pdf)"
    return None


class Stopped(Exception):
    """The run is stopping: a file being hashed is left unread (its row stays pending)."""


def hash_file(path: Path, limit: int = MAX_FILE_BYTES + 1,
              stop: threading.Event | None = None) -> tuple[int, str]:
    """(bytes read, sha256 hex), reading in 1 MiB chunks, never more than `limit` bytes
    (a "file" that keeps giving, e.g. under /proc, is not read to its end); `stop`, when
    set, ends the reading at the next chunk (`Stopped`). Blocking: run in a thread."""
    with open_regular(path) as fh:
        return _hash_open(fh, limit, stop)


def _hash_open(fh: BinaryIO, limit: int, stop: threading.Event | None) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while size < limit and (chunk := fh.read(min(HASH_CHUNK, limit - size))):
        if stop is not None and stop.is_set():
            raise Stopped
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _not_found(path: Path) -> str:
    """"file not found", and a hint where the path's names have surrounding spaces and
    the path without them names a file (the path is used exactly as written)."""
    trimmed = Path(*(part.strip() or part for part in path.parts))
    if trimmed != path and os.path.lexists(trimmed):
        return ("file not found (a name in its path begins or ends with a space; the "
                "same path without those spaces exists: the path is used exactly as "
                "written, so correct it in the manifest)")
    return "file not found"


def _open_problem(path: Path, exc: Exception) -> str:
    """Why `path` could not be opened for its check, in words."""
    if isinstance(exc, FileNotFoundError):
        return _not_found(path)
    if isinstance(exc, IsLink):
        return f"symbolic link not followed ({FOLLOW_HINT})"
    if isinstance(exc, OutsideRoot):
        return f"{exc.strerror}; not read"
    if isinstance(exc, NotRegularFile):
        return f"{exc.strerror}; not opened"
    if isinstance(exc, PermissionError):
        return "file not readable (permission denied)"
    if isinstance(exc, ValueError):  # a NUL byte that got this far
        return "path contains a NUL byte"
    try:  # e.g. a socket cannot be opened at all: say what it is
        kind = special_kind(path.stat().st_mode)
    except OSError:
        kind = None
    if kind is not None:
        return f"not a regular file ({kind}); not opened"
    return f"cannot open file: {getattr(exc, 'strerror', None) or type(exc).__name__}"


class Handover:
    """Where a check that keeps its file open (`LocalFile.opened`) hands it to its
    caller; a caller that stopped waiting (cancelled) never gets it, so the file is
    closed here instead, whichever of the two comes first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._given: LocalFile | None = None

    def give(self, local: LocalFile) -> None:
        """From the checking thread, the file kept open."""
        with self._lock:
            if self._abandoned:
                close_kept(local)
            else:
                self._given = local

    def abandon(self) -> None:
        """From the caller, cancelled: what was or will be given is closed."""
        with self._lock:
            self._abandoned = True
            close_kept(self._given)


def inspect_file(row: Row, path: Path, stop: threading.Event | None = None, *,
                 nofollow: bool = False, root: Path | None = None,
                 keep_bytes: int = 0, handover: Handover | None = None) -> LocalFile | str:
    """Open once, the type and size checks on the descriptor, then sha256: blocking, so
    it runs in a thread (one hand-off per file).

    The file is opened once and everything is judged on that descriptor, so a file
    swapped between two system calls is never checked in one shape and read in
    another. `nofollow`: a link is not followed. `root`: the file actually opened must
    be inside it. The `LocalFile` carries the opened file's real path and `Identity`,
    which the upload compares before it sends a byte (`formbody.open_with_first_chunk`).
    A file of at most `keep_bytes` bytes is kept open with the bytes hashed
    (`LocalFile.opened`, the caller closes it; given to `handover` too, which closes
    it if the caller stopped waiting): its upload needs no second open.
    """
    try:
        fh = open_regular(path, nofollow=nofollow, root=root)
    except (OSError, ValueError) as exc:
        return _open_problem(path, exc)
    try:
        result = _inspect_open(row, path, fh, stop, root, keep_bytes)
    except BaseException:
        fh.close()
        raise
    if not isinstance(result, LocalFile) or result.opened is None:
        fh.close()
    elif handover is not None:
        handover.give(result)
    return result


def _inspect_open(row: Row, path: Path, fh: BinaryIO, stop: threading.Event | None,
                  root: Path | None, keep_bytes: int) -> LocalFile | str:
    """`inspect_file` on the file open as `fh` (which it leaves open)."""
    data: bytes | None = None
    try:
        before = os.fstat(fh.fileno())
        real = real_path_of(fh.fileno())  # once: the refusal and the LocalFile
        own = own_files.refusal(before, real)
        if own is not None:
            return own
        if root is not None and before.st_nlink > 1:
            get_logger().warning(HARD_LINK_NOTE, stage="scan", line=row.line,
                                 client_id=row.client_id, links=before.st_nlink)
        if before.st_size > MAX_FILE_BYTES:
            return (f"file is {before.st_size:,} bytes; PracSuite accepts at most "
                    f"{MAX_FILE_BYTES:,} bytes (100 MB)")
        # One byte past the size it claims, and never past the limit: enough to tell
        # a file that keeps giving bytes.
        limit = min(before.st_size, MAX_FILE_BYTES) + 1
        if keep_bytes > 0 and before.st_size <= keep_bytes:  # 0: never kept
            data = _read_small(fh, limit)
            size, sha = len(data), hashlib.sha256(data).hexdigest()
        else:
            size, sha = _hash_open(fh, limit, stop)
        after = os.fstat(fh.fileno())
    except PermissionError:
        return "file not readable (permission denied)"
    except OSError as exc:
        return f"cannot read file: {exc.strerror}"
    if size > before.st_size:
        return (f"file gives more bytes than its size ({before.st_size:,}): it is still "
                "being written, or it is not a real file (e.g. under /proc); not read "
                "further")
    identity = Identity.of(after)
    if size != before.st_size or Identity.of(before) != identity:
        return "file changed while being read; run again once it is complete"
    return LocalFile(row=row, path=real or path, size=size, sha256=sha, identity=identity,
                     disk_identity=identity_text(before),
                     opened=Opened(fh, data) if data is not None else None)


def _read_small(fh: BinaryIO, limit: int) -> bytes:
    """Up to `limit` bytes of a small file, however many reads the system gives them in."""
    data = fh.read(limit)
    while len(data) < limit and (more := fh.read(limit - len(data))):
        data += more
    return data


_inspect_file = aiofiles.os.wrap(inspect_file)  # in the loop's default executor


async def check_local(row: Row, *, nofollow: bool = False, root: Path | None = None,
                      empty_files: str = "send", keep_bytes: int = 0) -> LocalFile | str:
    """The row's file, checked and hashed; or the reason it cannot be sent.

    The file system is touched only in a worker thread (`inspect_file`, through
    aiofiles), so a slow network share does not stall the event loop; hashlib
    releases the GIL while it hashes. `empty_files` is `upload.empty_files`
    (`refusals.empty_file_problem`). A file of at most `keep_bytes` comes back open
    with its bytes (`LocalFile.opened`): the caller closes it.
    """
    if row.problem:
        return row.problem
    problem = client_id_problem(row.client_id)
    if problem:
        return problem
    problem = file_name_problem(row.file_name)
    if problem:
        return problem
    stop = threading.Event()
    handover = Handover()
    try:
        result: LocalFile | str = await _inspect_file(row, Path(row.path), stop,
                                                      nofollow=nofollow, root=root,
                                                      keep_bytes=keep_bytes,
                                                      handover=handover)
    except asyncio.CancelledError:
        stop.set()  # Ctrl-C, SIGTERM: the thread stops at its next chunk
        handover.abandon()  # a file it keeps open is closed, not left to the collector
        raise
    if isinstance(result, LocalFile):
        problem = empty_file_problem(result.size, empty_files)
        if problem is not None:
            close_kept(result)
            return problem
    return result


def close_kept(local: LocalFile | str | None) -> None:
    """Close the file a check kept open (`LocalFile.opened`), if any: the file's work is
    over (sent, skipped, failed or stopped)."""
    if isinstance(local, LocalFile) and local.opened is not None:
        local.opened.fh.close()
