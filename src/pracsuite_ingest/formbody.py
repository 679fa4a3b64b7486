"""The presigned POST's body as one stream: every field in one write, then the file.

aiohttp's `FormData` writes each part's headers, value and line break separately (25
socket writes for PracSuite's seven fields and a small file) and builds a payload
object per field: together about a fifth of the worker's event-loop time in the
benchmark's profile. `form_body` lays out the same multipart/form-data bytes as
`FormData(quote_fields=False)` does (tests/test_formbody.py holds it to that, byte for
byte), sends the fields with the file's first chunk and streams the rest of the file
from disk in chunks read in a worker thread. The first chunk is read where the file is
opened (`open_with_first_chunk`, one thread hand-off for both), so a small file costs
one hand-off and goes out in a single write.

The bytes sent are the bytes checked: a small file comes from the check still open
with the bytes it hashed (`LocalFile.opened`), sent once `still_checked` finds the
descriptor unchanged and still linked; a bigger one is opened again by
`open_with_first_chunk`, without following a link, inside `input.root`, and its
`Identity` compared with the check's. `FormBody` hashes what it streams and, before
it hands on the last piece of the body, compares size, sha256 and identity with the
check. Anything different raises `FileChanged` there, so the body is never complete
and S3 stores nothing.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import mimetypes
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from pracsuite_ingest.bandwidth import BandwidthCap
from pracsuite_ingest.localfs import IsLink, OutsideRoot, open_regular
from pracsuite_ingest.models import Identity, LocalFile, Opened

CHUNK_BYTES = 256 * 1024  # as aiohttp reads files; bigger chunks only hold more in memory


def content_type_of(file_name: str) -> str:
    """The file part's Content-Type, from the name's extension."""
    return mimetypes.guess_type(file_name)[0] or "application/octet-stream"


def _quoted(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("a form field name or file name cannot hold a line break")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FileChanged(OSError):
    """The file is not the one that was checked: another inode, another size or
    modification time, other bytes, a link, or outside `input.root`."""


def _read_hashed(fh: BinaryIO, n: int, digest: Any) -> bytes:
    """Read up to `n` bytes and hash them, in one thread hand-off (hashlib releases
    the GIL on large chunks)."""
    chunk = fh.read(n)
    if digest is not None:
        digest.update(chunk)
    return chunk


class FormBody(Payload):
    """`head`, then `size` bytes of `fh` (`first`, already read, then the rest from
    where `fh` stands), then `tail`.

    `handed_on` turns true once the last of the body is handed to the connection: from
    then on S3 may have the whole file, whatever happens to the answer. With `cap`,
    each write waits for its turn under the process's bandwidth cap first. With
    `sha256` (and `identity`), the last piece goes out only if what was streamed has
    that sha256 and the file still has that identity; else `changed` is set and
    `FileChanged` raised, which aborts the request before the body is complete.
    """

    def __init__(self, head: bytes, fh: BinaryIO, size: int, tail: bytes,
                 content_type: str, first: bytes = b"", cap: BandwidthCap | None = None,
                 *, sha256: str | None = None, identity: Identity | None = None) -> None:
        super().__init__(fh, content_type=content_type)
        self._cap = cap
        self._head, self._fh, self._file_size, self._tail = head, fh, size, tail
        self._first = first
        self._size = len(head) + size + len(tail)
        self._sha256 = sha256
        self._identity = identity
        self.handed_on = False
        self.changed = False

    def _check_whole(self, digest: Any) -> None:
        """Before the last piece: what was streamed is what was checked, or raise."""
        same = digest is None or digest.hexdigest() == self._sha256
        if same and self._identity is not None:
            same = Identity.of(os.fstat(self._fh.fileno())) == self._identity
        if not same:
            self.changed = True
            raise FileChanged(errno.EIO, "the file changed while it was being sent")

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file upload body is not text")

    async def write(self, writer: AbstractStreamWriter) -> None:
        pending = self._head
        left = self._file_size
        first, self._first = self._first, b""
        digest = hashlib.sha256() if self._sha256 is not None else None
        if first and digest is not None:
            digest.update(first)
        while left > 0:
            chunk = first or await asyncio.to_thread(
                _read_hashed, self._fh, min(CHUNK_BYTES, left), digest)
            first = b""
            if not chunk:
                # The Content-Length promised more: stop rather than send a short body.
                self.changed = True
                raise FileChanged(errno.EIO, "the file shrank while it was being sent")
            if len(chunk) > left:  # the first chunk holds more than was checked: it grew
                self.changed = True
                raise FileChanged(errno.EIO, "the file grew while it was being sent")
            left -= len(chunk)
            if left == 0:
                self._check_whole(digest)
            if pending or left == 0:
                chunk = b"".join((pending, chunk, self._tail if left == 0 else b""))
                pending = b""
            if self._cap is not None:
                await self._cap.take(len(chunk))
            self.handed_on = left == 0
            await writer.write(chunk)
        if self._file_size == 0:
            self._check_whole(digest)
            self.handed_on = True
            await writer.write(pending + self._tail)

    async def write_with_length(self, writer: AbstractStreamWriter,
                                content_length: int | None) -> None:
        await self.write(writer)


def open_with_first_chunk(path: Path, *, identity: Identity | None = None,
                          root: Path | None = None) -> tuple[BinaryIO, bytes]:
    """`path` opened (a regular file only) and its first chunk read. Blocking: one
    thread hand-off for both.

    With `identity` (the check's), `path` is the file checked, opened without
    following a link, and it must still have that identity; with `root`, the file
    opened must be inside it. `FileChanged` otherwise.
    """
    try:
        fh = open_regular(path, nofollow=identity is not None, root=root)
    except (IsLink, OutsideRoot, FileNotFoundError) as exc:
        raise FileChanged(errno.ESTALE, f"the file checked is not there ({exc.strerror})"
                          ) from None
    try:
        same = identity is None or Identity.of(os.fstat(fh.fileno())) == identity
        first = fh.read(CHUNK_BYTES) if same else b""
    except BaseException:
        fh.close()
        raise
    if not same:
        fh.close()
        raise FileChanged(errno.ESTALE, "the file is not the one checked")
    return fh, first


def still_checked(kept: Opened, local: LocalFile) -> bytes:
    """The bytes a check kept (`LocalFile.opened`), if the file it kept open is still as
    checked: the same inode, size and modification time, and still linked (a file
    unlinked or renamed over since, e.g. its name turned into a link elsewhere, is not
    the row's file any more); else `FileChanged`. One `fstat` on the descriptor, in the
    loop, as `FormBody` makes before the last piece of every body."""
    st = os.fstat(kept.fh.fileno())
    if Identity.of(st) != local.identity or st.st_nlink == 0 or len(kept.data) != local.size:
        raise FileChanged(errno.ESTALE, "the file is not the one checked")
    return kept.data


def form_body(fields: Iterable[tuple[str, str]], fh: BinaryIO, file_name: str,
              size: int | None = None, first: bytes = b"",
              cap: BandwidthCap | None = None, *, sha256: str | None = None,
              identity: Identity | None = None) -> FormBody:
    """Every field in the order and spelling given, then the `file` part: `first`
    (bytes already read from `fh`), then `fh` from its position.

    `size`, the file part's length, defaults to `first` plus what is left of `fh`.
    `sha256` and `identity`: what the check saw (see `FormBody`).
    """
    if size is None:
        size = len(first) + os.fstat(fh.fileno()).st_size - fh.tell()
    boundary = secrets.token_hex(16)
    parts = [
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Disposition: form-data; name={_quoted(name)}\r\n\r\n{value}\r\n"
        for name, value in fields
    ]
    parts.append(
        f"--{boundary}\r\nContent-Type: {content_type_of(file_name)}\r\n"
        f"Content-Disposition: form-data; name=\"file\"; filename={_quoted(file_name)}"
        "\r\n\r\n")
    return FormBody("".join(parts).encode(), fh, size, f"\r\n--{boundary}--\r\n".encode(),
                    f"multipart/form-data; boundary={boundary}", first, cap, sha256=sha256,
                    identity=identity)
