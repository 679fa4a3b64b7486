"""The upload body: the bytes aiohttp's FormData would send, in far fewer writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.abc import AbstractStreamWriter

from pracsuite_ingest.formbody import CHUNK_BYTES, form_body, open_with_first_chunk
from pracsuite_ingest.models import Presigned
from pracsuite_ingest.upload import build_form

PRESIGNED = Presigned("http://127.0.0.1:1/bucket", (
    ("key", "temp/1/7/1/1/0b7e/Scan \"é\", 1.pdf"), ("Policy", "eyJleHBpcmF0aW9uIjoi"),
    ("x-amz-algorithm", "AWS4-HMAC-SHA256"), ("x-amz-credential", "AK/20260101/r/s3/aws4"),
    ("x-amz-date", "20260101T000000Z"), ("x-amz-signature", "ab" * 32),
    ("x-amz-security-token", "tok/en+=")))
NAME = 'Scan "é", 1.pdf'


class Writes(AbstractStreamWriter):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.chunks.append(bytes(chunk))

    async def write_eof(self, chunk: bytes = b"") -> None:
        self.chunks.append(chunk)

    async def drain(self) -> None:
        return None

    def enable_compression(self, encoding: str = "deflate", strategy: object = None) -> None:
        raise NotImplementedError

    def enable_chunking(self) -> None:
        raise NotImplementedError

    async def write_headers(self, status_line: str, headers: object) -> None:
        raise NotImplementedError

    def send_headers(self) -> None:
        raise NotImplementedError


async def formdata_bytes(path: Path) -> tuple[bytes, str]:
    """What aiohttp's own FormData sends for the file, and its boundary."""
    with path.open("rb") as fh:
        multipart = build_form(PRESIGNED, fh, NAME)()
        out = Writes()
        await multipart.write(out)
    return b"".join(out.chunks), multipart.boundary  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", [0, 1, 16 * 1024, CHUNK_BYTES, 2 * CHUNK_BYTES + 3])
async def test_the_body_is_byte_for_byte_what_formdata_sends(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f.pdf"
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    expected, their_boundary = await formdata_bytes(path)
    with path.open("rb") as fh:
        body = form_body(PRESIGNED.fields, fh, NAME)
        out = Writes()
        assert not body.handed_on
        await body.write(out)
        assert body.handed_on  # the whole body went to the connection: S3 may have it
    sent = b"".join(out.chunks)
    ours = body.content_type.split("boundary=", 1)[1]
    assert sent.replace(ours.encode(), their_boundary.encode()) == expected
    assert body.size == len(sent)
    assert len(out.chunks) == max(1, -(-size // CHUNK_BYTES))  # the fields ride with the file


@pytest.mark.parametrize("size", [0, 16 * 1024, CHUNK_BYTES + 1, 2 * CHUNK_BYTES + 3])
async def test_a_first_chunk_read_at_open_gives_the_same_bytes(tmp_path: Path,
                                                               size: int) -> None:
    path = tmp_path / "f.pdf"
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    expected, their_boundary = await formdata_bytes(path)
    fh, first = open_with_first_chunk(path)
    with fh:
        assert len(first) == min(size, CHUNK_BYTES)
        body = form_body(PRESIGNED.fields, fh, NAME, first=first)
        out = Writes()
        await body.write(out)
    sent = b"".join(out.chunks)
    ours = body.content_type.split("boundary=", 1)[1]
    assert sent.replace(ours.encode(), their_boundary.encode()) == expected
    assert body.size == len(sent)
    assert len(out.chunks) == max(1, -(-size // CHUNK_BYTES))


class FailsOnSecondWrite(Writes):
    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self.chunks:
            raise ConnectionResetError("cut")
        await super().write(chunk)


async def test_a_body_cut_before_its_last_chunk_was_not_handed_on(tmp_path: Path) -> None:
    path = tmp_path / "f.pdf"
    path.write_bytes(b"x" * (2 * CHUNK_BYTES + 3))
    fh, first = open_with_first_chunk(path)
    with fh:
        body = form_body(PRESIGNED.fields, fh, NAME, first=first)
        with pytest.raises(ConnectionResetError):
            await body.write(FailsOnSecondWrite())
    assert not body.handed_on  # the upload is sent again at once, not reconciled first


async def test_a_file_that_shrinks_while_sent_stops_the_body(tmp_path: Path) -> None:
    path = tmp_path / "f.pdf"
    path.write_bytes(b"x" * 1000)
    with path.open("rb") as fh:
        body = form_body(PRESIGNED.fields, fh, NAME, size=2000)
        with pytest.raises(OSError, match="shrank"):
            await body.write(Writes())


def test_a_line_break_in_a_file_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.pdf"
    path.write_bytes(b"x")
    with path.open("rb") as fh, pytest.raises(ValueError, match="line break"):
        form_body(PRESIGNED.fields, fh, "a\r\nX-Evil: 1.pdf")
