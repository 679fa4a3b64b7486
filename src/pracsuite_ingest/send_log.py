"""The send log: an upload's presigned key kept for the next run before its first byte
leaves, without a commit of the state file.

A commit writes every page it changed, whole (bench/state_writes.py): committing the
state before each upload, even grouped every 50 ms, cost 17 KB written per 1 KB file.
Instead, the move to `uploading` with its key is written to the state file *pending*
(in its open transaction, committed with everything else every `COMMIT_EVERY_S`), and
the item's whole row, as it stands then, is appended to `<state>.sends` with one
write(2): a line of JSON, its values in the order a header line names the columns in
(written with the first row after each time the log is emptied). Once write returns,
the kernel holds it: it survives the process (SIGKILL, OOM, a crash), as a commit under
`synchronous=NORMAL` does, and, like such a commit, not a power cut before the kernel
writes it back.

Each commit of the state file empties the log (the rows it holds are committed). The
next process to take the state's lock replays the log into the state file before it
does anything else (`replay`): a row whose item the file lacks is inserted as logged;
an item with fewer sends than its logged row is overwritten with it; an item with as
many (a kill between a commit and the log emptied) is left alone. A last line torn by a
kill inside write(2) was never followed by its upload: it is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pracsuite_ingest.errors import StateUnusable
from pracsuite_ingest.localfs import open_private, private_file

SUFFIX = ".sends"


def path_of(state_path: Path) -> Path:
    """Where the send log of the state file `state_path` lives."""
    return Path(f"{state_path}{SUFFIX}")


def _rows(text: bytes) -> Iterator[dict[str, Any]]:
    """Each row the log holds, as a dict of its non-NULL columns. A line is a header
    (`{"columns": [...]}`, what the lines after it name) or a row's values in that
    order (a list); versions before wrote each row as a dict of its columns."""
    names: list[str] | None = None
    for line in text.splitlines():
        try:
            found = json.loads(line)
        except ValueError:
            continue  # torn by a kill inside write(2): its upload never started
        if isinstance(found, dict) and isinstance(found.get("columns"), list):
            names = [str(n) for n in found["columns"]]
            continue
        if isinstance(found, list) and names is not None and len(found) == len(names):
            found = {n: v for n, v in zip(names, found, strict=True) if v is not None}
        if isinstance(found, dict) and isinstance(found.get("id"), int):
            yield found


def rows_of(log_path: Path) -> list[dict[str, Any]]:
    """The rows the log holds, in order (none if it is missing); torn lines skipped."""
    try:
        return list(_rows(log_path.read_bytes()))
    except FileNotFoundError:
        return []


def replay(conn: sqlite3.Connection, log_path: Path) -> int:
    """Bring what `log_path` holds into the state file (`conn`, not in a transaction);
    returns how many items it changed. Commits (the log is emptied by `SendLog`)."""
    try:
        text = log_path.read_bytes()
    except FileNotFoundError:
        return 0
    if not text:
        return 0
    # A column a line leaves out was NULL (`SendLog.append`); one NOT NULL that it
    # lacks (added by a later version's upgrade) takes its default.
    columns = [(c[1], bool(c[3])) for c in conn.execute("PRAGMA table_info(items)")]
    changed = 0
    conn.execute("BEGIN")
    for row in _rows(text):
        names = [n for n, not_null in columns if n in row or not not_null]
        with contextlib.suppress(sqlite3.IntegrityError):  # not this state's row: skipped
            changed += conn.execute(_upsert(tuple(names)), [row.get(n) for n in names]
                                    ).rowcount
    conn.execute("COMMIT")
    return changed


@functools.lru_cache(maxsize=8)
def _upsert(names: tuple[str, ...]) -> str:
    """The row's columns inserted, or set where the file's item has fewer sends."""
    sets = ", ".join(f"{n} = excluded.{n}" for n in names if n != "id")
    return (f"INSERT INTO items ({', '.join(names)}) "  # noqa: S608 (names: the table's own)
            f"VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT(id) DO UPDATE SET {sets} WHERE excluded.sends > items.sends")


class SendLog:
    """The send log of one state file, open for appending while the state is locked.
    Opened empty: make it only once what it held is replayed (`replay`) and committed."""

    def __init__(self, log_path: Path) -> None:
        private_file(log_path)
        self._fh = open_private(log_path)
        self._fd = self._fh.fileno()
        os.ftruncate(self._fd, 0)
        self.lines = 0  # lines written since the log was last emptied
        self._names: tuple[str, ...] = ()  # the columns the header since then named
        self._failed: StateUnusable | None = None  # a write failed: nothing more is kept

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one item's row (its values, in the order of the columns the log's
        header names: the header first, in the same write, after the log was emptied);
        on return the next run will find it. Named in every line, the columns were a
        third of the log's bytes (0.6 KB a 1 KB file; bench/state_bytes.py)."""
        if self._failed is not None:  # after a torn line, no line is appended to it
            raise self._failed
        names = tuple(row)
        header = ""
        if not self.lines or names != self._names:
            header = json.dumps({"columns": names}, separators=(",", ":")) + "\n"
        # ASCII: any name (lone surrogates of undecodable bytes included) as \u escapes
        data = (header + json.dumps(list(row.values()), separators=(",", ":")) + "\n"
                ).encode("ascii")
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            self._failed = StateUnusable("cannot write the state file's send log: " + (
                f"the disk is full ({exc.strerror})" if full else str(exc.strerror)))
            raise self._failed from None
        if written != len(data):  # a full disk mid-line: the line is torn, not kept
            self._failed = StateUnusable(
                "cannot write the state file's send log: the disk is full")
            raise self._failed
        self.lines += 1
        self._names = names

    def empty(self) -> None:
        """Every row logged is committed to the state file: start afresh."""
        if self.lines:
            with contextlib.suppress(OSError):  # kept, the rows replay as no-ops
                os.ftruncate(self._fd, 0)
            self.lines = 0

    def close(self) -> None:
        self._fh.close()
