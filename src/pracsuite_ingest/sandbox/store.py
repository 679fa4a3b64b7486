"""Where the sandbox's S3 keeps objects, and how the API side looks them up.

The API side needs only `ObjectLookup` (the size of an object, as a HEAD gives it),
so a later validator against an external S3 (radosgw) can implement that protocol
with a HEAD request and nothing else changes. The sandbox's own S3 server writes
through `LocalStore`: a file per object at `<root>/<bucket>/<key>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8 bytes
_MAX_SEGMENT_BYTES = 255  # a file name on common file systems
_INCOMING = ".incoming"  # bucket names cannot start with a dot: no clash


class ObjectLookup(Protocol):
    """What validation needs from storage: does the object exist, and how big is it."""

    async def size_of(self, bucket: str, key: str) -> int | None:
        """The object's size in bytes, None when there is no such object."""
        ...


def key_path(key: str) -> PurePosixPath | None:
    """The relative path a key is stored at, None when it cannot be stored safely.

    Refused: empty keys, keys over 1024 UTF-8 bytes, empty, `.` or `..` segments (a
    leading or doubled slash, path traversal), NUL, and segments too long for a file
    name. Non-ASCII and slashes are kept as they are.
    """
    if not key or len(key.encode()) > MAX_KEY_BYTES or "\x00" in key:
        return None
    segments = key.split("/")
    for segment in segments:
        if segment in ("", ".", "..") or len(segment.encode()) > _MAX_SEGMENT_BYTES:
            return None
    return PurePosixPath(*segments)


class LocalStore:
    """Objects as files under `root`; writes land in a temp file, then one rename."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._incoming = self.root / _INCOMING
        self._incoming.mkdir(parents=True, exist_ok=True)
        # Pre-existing records' objects, written at their first read (`seed`).
        self._seeded: dict[tuple[str, str], bytes] = {}
        self._seed_lock = threading.RLock()  # size look-ups run in threads; commit nests

    def object_path(self, bucket: str, key: str) -> Path | None:
        """Where `bucket`/`key` lives; None when either cannot be a safe path."""
        relative = key_path(key)
        if relative is None or key_path(bucket) is None or "/" in bucket or bucket == _INCOMING:
            return None
        path = self.root / bucket / relative
        # Belt and braces against symlinks placed under the root by hand.
        if not path.resolve().is_relative_to(self.root):
            return None
        return path

    @contextlib.contextmanager
    def receiving(self) -> Iterator[tuple[BinaryIO, Path]]:
        """A temp file to stream a body into; removed on exit unless committed."""
        fd, name = tempfile.mkstemp(dir=self._incoming, prefix="upload-")
        temp = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle, temp
        finally:
            temp.unlink(missing_ok=True)

    def commit(self, temp: Path, bucket: str, key: str) -> Path:
        """Move a received temp file into place, replacing any previous object.

        Raises ValueError for a key `object_path` refuses, OSError when the file
        system cannot hold it (for example a key that is another key's "folder").
        """
        path = self.object_path(bucket, key)
        if path is None:
            raise ValueError(f"key cannot be stored: {key!r}")
        with self._seed_lock:
            self._seeded.pop((bucket, key), None)  # an upload replaces a seeded object
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.replace(path)
        return path

    def seed(self, bucket: str, keys: Iterable[str], data: bytes) -> None:
        """Objects that exist from the start (pre-existing records), all holding `data`.

        Each is written at its first read (`stored_path`): a sandbox seeding 120
        records for each of 51 clients starts in milliseconds instead of making
        thousands of directories on disk that no test reads.
        """
        for key in keys:
            if key_path(key) is None:
                raise ValueError(f"key cannot be stored: {key!r}")
            self._seeded[(bucket, key)] = data

    def stored_path(self, bucket: str, key: str) -> Path | None:
        """Where `bucket`/`key` is stored (None when it cannot be a safe path); a seeded
        object is written there first. The file may not exist: no such object."""
        path = self.object_path(bucket, key)
        if path is not None and (bucket, key) in self._seeded:
            with self._seed_lock:
                data = self._seeded.pop((bucket, key), None)
                if data is not None:
                    self.put_bytes(bucket, key, data)
        return path

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        """Store a small object at once (seeding pre-existing records)."""
        with self.receiving() as (handle, temp):
            handle.write(data)
            handle.close()
            self.commit(temp, bucket, key)

    def stat_size(self, bucket: str, key: str) -> int | None:
        """The stored object's size, None when absent."""
        path = self.stored_path(bucket, key)
        if path is None or not path.is_file():
            return None
        return path.stat().st_size

    async def size_of(self, bucket: str, key: str) -> int | None:
        """`ObjectLookup`: a stat, off the event loop."""
        return await asyncio.to_thread(self.stat_size, bucket, key)
