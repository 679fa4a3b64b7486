"""Plain data that flows down the pipeline: frozen dataclasses and string enums."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Status(StrEnum):
    """An item's status in the report (SPEC.md): exactly one per input row."""

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
class LocalFile:
    """A row whose file passed every local check."""

    row: Row
    path: Path
    size: int
    sha256: str


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
