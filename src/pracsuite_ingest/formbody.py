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
"""

from __future__ import annotations

import asyncio
import errno
import mimetypes
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from pracsuite_ingest.bandwidth import BandwidthCap
from pracsuite_ingest.localfs import open_regular

CHUNK_BYTES = 256 * 1024  # as aiohttp reads files; bigger chunks only hold more in memory


def content_type_of(file_name: str) -> str:
    """The file part's Content-Type, from the name's extension."""
    return mimetypes.guess_type(file_name)[0] or "application/octet-stream"


def _quoted(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("a form field name or file name cannot hold a line break")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FormBody(Payload):
    """`head`, then `size` bytes of `fh` (`first`, already read, then the rest from
    where `fh` stands), then `tail`.

    `handed_on` turns true once the last of the body is handed to the connection: from
    then on S3 may have the whole file, whatever happens to the answer. With `cap`,
    each write waits for its turn under the process's bandwidth cap first.
    """

    def __init__(self, head: bytes, fh: BinaryIO, size: int, tail: bytes,
                 content_type: str, first: bytes = b"", cap: BandwidthCap | None = None,
                 ) -> None:
        super().__init__(fh, content_type=content_type)
        self._cap = cap
        self._head, self._fh, self._file_size, self._tail = head, fh, size, tail
        self._first = first
        self._size = len(head) + size + len(tail)
        self.handed_on = False

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file upload body is not text")

    async def write(self, writer: AbstractStreamWriter) -> None:
        pending = self._head
        left = self._file_size
        first, self._first = self._first, b""
        while left > 0:
            chunk = first or await asyncio.to_thread(self._fh.read, min(CHUNK_BYTES, left))
            first = b""
            if not chunk:
                # The Content-Length promised more: stop rather than send a short body.
                raise OSError(errno.EIO, "the file shrank while it was being sent")
            left -= len(chunk)
            if pending or left == 0:
                chunk = b"".join((pending, chunk, self._tail if left == 0 else b""))
                pending = b""
            if self._cap is not None:
                await self._cap.take(len(chunk))
            self.handed_on = left == 0
            await writer.write(chunk)
        if self._file_size == 0:
            self.handed_on = True
            await writer.write(pending + self._tail)

    async def write_with_length(self, writer: AbstractStreamWriter,
                                content_length: int | None) -> None:
        await self.write(writer)


def open_with_first_chunk(path: Path) -> tuple[BinaryIO, bytes]:
    """`path` opened (a regular file only) and its first chunk read. Blocking: one
    thread hand-off for both."""
    fh = open_regular(path)
    try:
        return fh, fh.read(CHUNK_BYTES)
    except BaseException:
        fh.close()
        raise


def form_body(fields: Iterable[tuple[str, str]], fh: BinaryIO, file_name: str,
              size: int | None = None, first: bytes = b"",
              cap: BandwidthCap | None = None) -> FormBody:
    """Every field in the order and spelling given, then the `file` part: `first`
    (bytes already read from `fh`), then `fh` from its position.

    `size`, the file part's length, defaults to `first` plus what is left of `fh`.
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
                    f"multipart/form-data; boundary={boundary}", first, cap)
