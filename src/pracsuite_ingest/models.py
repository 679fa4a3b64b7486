"""Plain data that flows down the pipeline: frozen dataclasses and string enums."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO


class Status(StrEnum):
    """An item's status in the report (docs/contract.md): exactly one per input row."""

    VALIDATED = "validated"
    MISSING = "missing"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"
    PENDING = "pending"


class Stage(StrEnum):
    """Where an item is in its life; persisted in the state file.

    `seen -> presigned -> uploading -> uploaded -> validated | missing`, with
    `failed`, `invalid` and `skipped` as ends reachable from the start.
    """

    SEEN = "seen"
    PRESIGNED = "presigned"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    VALIDATED = "validated"
    MISSING = "missing"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Row:
    """One input row as read, before any local check.

    `line` is the manifest line (or 0 for a directory entry); `problem` is set when
    the row itself is malformed and nothing else about it can be trusted.
    """

    line: int
    client_id: str
    path: str
    file_name: str
    extra: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """Which file, in which state: equal identities mean the same inode, unchanged."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True, eq=False)
class Opened:
    """A small checked file kept open, with every byte the check read and hashed: its
    upload sends `data` after one `fstat` of `fh` (the same inode, unchanged, still
    linked) instead of opening and reading the file again in a second thread
    hand-off. Whoever checked the file closes `fh` when the file's work is over."""

    fh: BinaryIO
    data: bytes


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A row whose file passed every local check.

    `path` is the file that was checked, as opened (its real path where the system
    tells it); `identity` what it was when checked (None when not known, e.g. an
    upload sent again from the state file: then only its bytes are compared).
    """

    row: Row
    path: Path
    size: int
    sha256: str
    identity: Identity | None = None
    disk_identity: str | None = None  # `localfs.disk_identity`'s text, stat-ed before the hash
    opened: Opened | None = field(default=None, compare=False, repr=False)  # small files


@dataclass(frozen=True, slots=True)
class Presigned:
    """A presigned S3 POST exactly as PracSuite returned it.

    `fields` keeps the order and spelling of the response; nothing may change them.
    """

    url: str
    fields: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        for name, value in self.fields:
            if name == "key":
                return value
        return ""

    def __repr__(self) -> str:  # the fields hold a policy, a signature and a token
        hidden = len(self.fields)
        return f"Presigned(url={self.url!r}, key={self.key!r}, fields=<{hidden} redacted>)"
