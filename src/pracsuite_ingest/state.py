"""The state file: opening it, its lock, and every write (runs, items, stage changes,
snapshots); its queries are in `state_reads.py` (`State` is a `StateReads`).

The state file is the worker's memory and audit trail. Each stage change is written
when it happens; commits are grouped: a commit costs whole pages, a stage change a few
bytes of one (bench/state_writes.py). What a crash must find is kept before it matters:
the move to `uploading` with its presigned key before the file's first byte leaves, in
the send log (`send_log.py`: one write(2) of the item's row, replayed by the next run,
no commit); a refusal (`failed`) at once; runs and snapshots at once. The rest
(`seen`, `presigned`, `uploaded`, a poll's claims, ...) rides along with the next
commit: one `COMMIT_EVERY_S` after the pending writes began or `MAX_PENDING_WRITES`
after the last commit (a write then, or `state_commits.GroupCommits`' timer), or
`commit`/`close`. Lost to a crash, such a change costs nothing: an item never sent is
sent by the next run, an `uploaded` one is still `uploading` with its key, which the
next run reconciles before anything is sent again, and a claim is made again by the
next run's poll. A second process on the same state file is refused by an
exclusive lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pracsuite_ingest import own_files, send_log
from pracsuite_ingest.errors import Fatal, StateUnusable
from pracsuite_ingest.localfs import folder_problem, open_private, private_file
from pracsuite_ingest.models import LocalFile, Row, Stage
from pracsuite_ingest.state_reads import ItemRecord as ItemRecord  # callers import it here
from pracsuite_ingest.state_reads import StateReads
from pracsuite_ingest.state_schema import SCHEMA, nfc, upgrade
from pracsuite_ingest.transitions import IllegalTransition, predecessors

# While rows keep coming, what `status` (another process) lags by. Each commit writes the
# pages it changed whole: every 5 s, an item's row is written about twice (its upload,
# its record), an index page once per commit (bench/scale.py: bytes written per file).
COMMIT_EVERY_S = 5.0
# A refusal, committed at once (rare; lost, the next run would wait a deadline for it).
# `uploading` is kept by the send log before the upload starts (`start_upload`).
DURABLE_AT_ONCE = frozenset({Stage.FAILED})

# A commit runs on the event loop: of this many writes at most (a poll claiming 100,000
# records commits every so many of them, each commit some 5-60 ms), else every 5 s.
# Each commit rewrites the pages it shares with the last (an index's leaf, the table's
# end), and each checkpoint the pages the WAL holds: fewer of both, fewer bytes. At
# 2,000 writes and an 8 MB WAL a 1 KB-file run wrote 5.2 KB a file at 10^4 files and
# 8.7 at 10^5; at 10,000 and 32 MB, 3.3 and 6.3 (bench/results/2026-12-05-state-bytes.md).
# A run's WAL frames come to ~2 KB a file: a 32 MB WAL was checkpointed every ~15,000
# files, and each checkpoint wrote again, scattered, the pages the polls had changed
# since (a 1 KB page costs the disk a 4 KB one): 10^5 files, 5.66 KB a file written;
# with 256 MB, 3.50 in the same run (three runs: 3.50-4.19, of which 2.9-3.6 reached
# the disk; bench/results/2026-12-05-evening-wal.md). A 10^4-file run never gets there:
# its WAL is checkpointed once, at its end, and deleted. A checkpoint holds the loop
# (it runs in the commit): 0.36 s at 256 MB on a 100,000-row state, once per ~120,000
# files (the WAL grows ~2.3 KB a file), against 0.13 s every ~15,000 at 32 MB.
# Commits every 10 s or 25,000 writes were tried: 3.57 against 3.66 KB a file at 10^4
# files in one run pair (bench/results/2026-12-05T08-35-48Z-scale.json), not worth
# twice the lag of `status` and commits holding the loop twice as long.
MAX_PENDING_WRITES = 10000
WAL_CHECKPOINT_PAGES = 262144  # 1 KB pages (state_schema.PAGE_SIZE): a 256 MB WAL
CACHE_KB = 8192  # what 5 s of changes fit in: a smaller cache spills them to the WAL twice

LOCK_TRIES, LOCK_PAUSE_S = 5, 0.02  # a lock held longer than ~0.1 s is a live process
DEAD_RUN = "interrupted"  # a run found `running` by the next process to take the lock

# Stages whose upload reached S3, or may have: such an item is reconciled, never re-sent blindly.
RECONCILE_STAGES = (Stage.UPLOADED.value, Stage.MISSING.value)


def _take_lock(fd: int) -> bool:
    """The state's lock, exclusive; False if another process holds it. A holder of an
    instant (`status` asking whether a run is alive: `status_read.lock_held`) is
    waited out."""
    for attempt in range(LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if attempt + 1 < LOCK_TRIES:
                time.sleep(LOCK_PAUSE_S)
        else:
            return True
    return False


class State(StateReads):
    """The state file. Open with `State.open`; `close` commits what is pending."""

    def __init__(self, conn: sqlite3.Connection, lock_fh: Any,
                 sends: send_log.SendLog | None = None) -> None:
        self._db = conn
        self._lock_fh = lock_fh
        self._sends = sends  # the send log, while this process holds the lock
        self._opened_at = 0.0  # when the pending (uncommitted) transaction began
        self._explicit = False  # inside `_transaction`: it commits, not each write
        self.writes = 0  # writes made so far, and how many of them are committed
        self.committed = 0
        self._broken: StateUnusable | None = None  # pending writes lost: nothing more is said
        self.on_pending: Callable[[], None] | None = None  # told of each pending write

    @classmethod
    def open(cls, path: Path, *, lock: bool = True) -> State:
        """Open (creating if needed) and lock the state file; `StateUnusable` if not.

        With the lock taken, every run the file still holds as `running` is dead (its
        process held the lock while it lived): it is marked `interrupted`, as a run
        stopped by a signal is, so that `status` does not show it running forever.
        """
        lock_fh = None
        try:
            # 0600 in a 0700 folder if we create them; SQLite's -wal and -shm follow suit.
            # Never through a link, never in a folder others could plant one in.
            problem = folder_problem(path.parent, "state.path")
            if problem is not None:
                raise StateUnusable(problem)
            private_file(path)
            for suffix in ("-wal", "-shm", send_log.SUFFIX):  # opened following links
                if os.path.lexists(f"{path}{suffix}"):
                    private_file(Path(f"{path}{suffix}"))
            if lock:
                private_file(Path(f"{path}.lock"))
                lock_fh = open_private(Path(f"{path}.lock"))
                if not _take_lock(lock_fh.fileno()):
                    lock_fh.close()
                    raise Fatal(
                        f"another pracsuite-ingest run is using the state file {path}; "
                        "wait for it to finish (two runs on one state file could upload twice)"
                    ) from None
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # A checkpoint copies each page the WAL holds into the file: fewer, larger
            # checkpoints copy a page changed by many commits once (a WAL of <= 256 MB).
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA cache_size=-{CACHE_KB}")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(SCHEMA)
            upgrade(conn)
            sends = None
            if lock:
                # We hold the lock, so no other process runs on this state file: what
                # its send log holds was sent by a process that died before its next
                # commit, and a run still `running` died without a word (SIGKILL, OOM).
                send_log.replay(conn, send_log.path_of(path))
                sends = send_log.SendLog(send_log.path_of(path))
                conn.execute("UPDATE runs SET outcome = ? WHERE outcome = 'running'",
                             (DEAD_RUN,))
        except sqlite3.Error as exc:
            raise StateUnusable(f"state file {path} is unusable: {exc}") from None
        except OSError as exc:
            raise StateUnusable(f"state file {path} is unusable: {exc.strerror}") from None
        own_files.guard("state", own_files.state_files(path))
        return cls(conn, lock_fh, sends)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error, StateUnusable):
            self.commit()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self._sends is not None:
            self._sends.close()
        if self._lock_fh is not None:
            self._lock_fh.close()

    def _write(self, sql: str, params: Iterable[Any] = (), *,
               durable: bool = True) -> sqlite3.Cursor:
        """Run one write; commit it (and whatever is pending) now if `durable`, else
        leave it pending: the next durable write, a write `COMMIT_EVERY_S` or more
        after the pending ones began or `MAX_PENDING_WRITES` after the last commit,
        `commit` or `close` commits it."""
        if self._broken is not None:
            raise self._broken
        pending = self.committed != self.writes
        if pending and not self._db.in_transaction:
            raise self._lost()
        try:
            self.writes += 1
            if not self._db.in_transaction:
                if durable:  # nothing pending: autocommit is the same, in one statement
                    cur = self._db.execute(sql, tuple(params))
                    self._committed()
                    return cur
                self._db.execute("BEGIN")
                self._opened_at = time.monotonic()
            cur = self._db.execute(sql, tuple(params))
            if not self._explicit and (
                    durable or time.monotonic() - self._opened_at >= COMMIT_EVERY_S
                    or self.writes - self.committed >= MAX_PENDING_WRITES):
                self._db.execute("COMMIT")
                self._committed()
        except sqlite3.Error as exc:
            if not pending and not self._explicit:
                self.writes = self.committed  # nothing was pending, and this one failed
            raise self._failed(exc, pending) from None
        if self.committed != self.writes and not self._explicit and self.on_pending:
            self.on_pending()
        return cur

    def commit(self) -> None:
        """Commit the writes still pending (a no-op when there are none)."""
        if self._broken is not None:
            raise self._broken
        if self.committed != self.writes and not self._db.in_transaction:
            raise self._lost()
        try:
            if self._db.in_transaction:
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._failed(exc, self.committed != self.writes) from None
        self._committed()

    def _lost(self) -> StateUnusable:
        """Writes were pending and their transaction is gone: SQLite rolled it back on
        its own (a full disk, an I/O error met by a read). Broken for good, like a
        failed commit: saying them committed would empty the send log of keys of
        uploads that may have begun."""
        self._broken = StateUnusable(
            "cannot write the state file: SQLite rolled back changes not yet committed")
        return self._broken

    def _committed(self) -> None:
        """Every write so far is committed: the send log's rows are in the file."""
        self.committed = self.writes
        if self._sends is not None:
            self._sends.empty()

    def _failed(self, exc: sqlite3.Error, pending: bool) -> StateUnusable:
        """The error to raise for a failed write or commit. Where SQLite rolled back
        writes that were pending (a full disk, an I/O error), the state is broken for
        good: no later write or commit may succeed and say those writes were kept (an
        upload would then start with its key not on disk)."""
        error = StateUnusable(f"cannot write the state file: {exc}")
        if pending and not self._db.in_transaction:
            self._broken = error
        return error

    # runs -------------------------------------------------------------------------
    def new_run(self, run_id: str, started_at: str) -> None:
        self._write("INSERT INTO runs (run_id, started_at) VALUES (?, ?)", (run_id, started_at))

    def finish_run(self, run_id: str, finished_at: str, outcome: str) -> None:
        self._write("UPDATE runs SET finished_at = ?, outcome = ? WHERE run_id = ?",
                    (finished_at, outcome, run_id))

    def mark_last_upload(self, run_id: str, at: float) -> None:
        self._write("UPDATE runs SET last_upload_at = ? WHERE run_id = ?", (at, run_id))

    # items ------------------------------------------------------------------------
    def add_item(self, run_id: str, seq: int, row: Row, local: LocalFile | None, stage: Stage,
                 *, error: str | None = None, key: str | None = None,
                 attachment_id: str | None = None, snapshot_run: str | None = None,
                 outcome_unknown: bool = False, uploaded_at: float | None = None,
                 duplicate_of: int | None = None, disk_identity: str | None = None,
                 replaces: str | None = None, settled: bool = False) -> int:
        now = time.time()
        cur = self._write(
            "INSERT INTO items (run_id, seq, line, client_id, path, file_name, name_nfc, size, "
            "sha256, extra, stage, error, key, attachment_id, snapshot_run, outcome_unknown, "
            "uploaded_at, duplicate_of, updated_at, disk_identity, replaces, settled) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, seq, row.line, row.client_id, row.path, row.file_name, nfc(row.file_name),
             local.size if local else None, local.sha256 if local else None,
             json.dumps(row.extra, ensure_ascii=False, default=str), stage.value, error, key,
             attachment_id, snapshot_run, int(outcome_unknown), uploaded_at, duplicate_of, now,
             disk_identity, replaces, int(settled)),
            durable=stage in DURABLE_AT_ONCE)
        return int(cur.lastrowid or 0)

    def note(self, item_id: int, error: str) -> None:
        """Say why an upload still awaits its record (it stays `uploaded`: pending)."""
        self._write("UPDATE items SET error = ?, updated_at = ? WHERE id = ? "
                    "AND stage = 'uploaded'", (error, time.time(), item_id), durable=False)

    def set_stage(self, item_id: int, stage: Stage, **fields: Any) -> None:
        """Move an item to `stage`, setting the named columns in the same statement.

        The move happens only from a stage `transitions.ALLOWED` permits; anything
        else is a bug and raises `IllegalTransition` (nothing is written).
        """
        allowed = {"error", "attempts", "key", "attachment_id", "outcome_unknown",
                   "snapshot_run", "uploaded_at", "size", "sha256", "verified"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"not an item column: {sorted(bad)}")
        self._move(item_id, stage, [f"{k} = ?" for k in fields], tuple(fields.values()))

    def start_upload(self, item_id: int, attempts: int, *, new_key: bool) -> None:
        """An upload attempt starts: `uploading`, with its attempt count; `new_key`: the
        first with its presigned key (one more send, counted against max_resends over
        every run), whose row goes to the send log: on return, a kill leaves the next
        run this key to reconcile before anything is sent again."""
        self._move(item_id, Stage.UPLOADING, ["attempts = ?", "sends = sends + ?"],
                   (attempts, int(new_key)))
        if new_key and self._sends is not None:
            try:
                cur = self._db.execute("SELECT * FROM items WHERE id = ?", (item_id,))
                names = [d[0] for d in cur.description]
                self._sends.append(dict(zip(names, cur.fetchone(), strict=True)))
            except (sqlite3.Error, StateUnusable) as exc:
                # Not kept: the upload must not start, and the pending move (a send
                # counted) must never be committed as if it had.
                self._broken = (exc if isinstance(exc, StateUnusable) else
                                StateUnusable(f"cannot read the state file: {exc}"))
                raise self._broken from None

    def _move(self, item_id: int, stage: Stage, sets: list[str], values: tuple[Any, ...]
              ) -> None:
        olds = sorted(s.value for s in predecessors(stage))
        marks = ", ".join("?" * len(olds))
        assignments = ", ".join([*sets, "stage = ?", "updated_at = ?"])
        cur = self._write(
            f"UPDATE items SET {assignments} WHERE id = ? AND stage IN ({marks})",  # noqa: S608
            (*values, stage.value, time.time(), item_id, *olds),
            durable=stage in DURABLE_AT_ONCE)
        if cur.rowcount != 1:
            current = self._db.execute("SELECT stage FROM items WHERE id = ?",
                                       (item_id,)).fetchone()
            raise IllegalTransition(
                f"item {item_id}: {current[0] if current else 'no such item'} -> {stage}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """The writes inside commit together, at the end, or not at all."""
        self.commit()  # a rollback below must not take earlier pending writes with it
        try:
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            raise StateUnusable(f"cannot write the state file: {exc}") from None
        self._explicit = True
        try:
            yield
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            self.writes = self.committed  # what it held is gone on purpose, not lost
            if isinstance(exc, sqlite3.Error):
                raise StateUnusable(f"cannot write the state file: {exc}") from None
            raise
        finally:
            self._explicit = False
        self.commit()

    # snapshots and claims ------------------------------------------------------------
    def save_snapshot(self, run_id: str, client_id: str, record_ids: Iterable[str]) -> None:
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO snapshots VALUES (?, ?, ?)",
                                 [(run_id, client_id, r) for r in record_ids])
            self._write("INSERT OR IGNORE INTO snapshot_done VALUES (?, ?)",
                        (run_id, client_id))
