"""What a storage's answer proves (pure), and the file's MD5 read back from disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pracsuite_ingest.verification import file_md5, plain_md5, total_size

MD5 = "5eb63bbbe01eeed093cb22bb8f5acdc3"


@pytest.mark.parametrize(("etag", "md5"), [
    (f'"{MD5}"', MD5),                 # S3 and radosgw send it quoted
    (MD5, MD5),
    (f'"{MD5.upper()}"', MD5),
    (f'"{MD5}-3"', None),              # a multipart upload's: not the bytes' MD5
    (f'W/"{MD5}"', None),              # weak
    (f'"{MD5}', None),                 # one quote
    ('"abc"', None),
    ("", None),
    (None, None),
])
def test_only_a_plain_md5_etag_says_what_the_bytes_are(etag: str | None,
                                                      md5: str | None) -> None:
    assert plain_md5(etag) == md5


@pytest.mark.parametrize(("header", "size"), [
    ("bytes 0-0/11", 11), ("bytes 0-0/104857600", 104_857_600),
    ("bytes 0-0/*", None), ("bytes */11", None), ("", None), (None, None),
])
def test_the_total_size_is_read_from_content_range(header: str | None,
                                                   size: int | None) -> None:
    assert total_size(header) == size


def test_a_files_md5_is_read_back_only_while_it_holds_the_bytes_sent(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    data = os.urandom(300_000)
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    assert file_md5(path, sha, len(data)) == hashlib.md5(data).hexdigest()
    path.write_bytes(os.urandom(300_000))  # rewritten at the same size
    assert file_md5(path, sha, len(data)) is None
    assert file_md5(tmp_path / "gone.pdf", sha, len(data)) is None
    link = tmp_path / "link.pdf"
    (tmp_path / "b.pdf").write_bytes(data)
    link.symlink_to(tmp_path / "b.pdf")
    assert file_md5(link, sha, len(data)) is None  # a link is not followed
    fifo = tmp_path / "fifo.pdf"
    os.mkfifo(fifo)
    assert file_md5(fifo, sha, len(data)) is None  # and a FIFO is not waited on
