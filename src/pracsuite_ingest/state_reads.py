"""What the state file holds, read: runs, items, the uploads awaiting a record,
snapshots and claims. Every query of the state file is here; `state.State` (which is a
`StateReads`) holds the connection, the lock and every write."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pracsuite_ingest.models import Row, Stage
from pracsuite_ingest.state_schema import AWAITING_STAGES, nfc

# An upload that reached S3 (or may have) and has no record yet: what reconcile asks about.
# `settled`: a `missing` file whose resends ran out (reconcile.max_resends) is not awaited.
_AWAITING = f"({AWAITING_STAGES} AND settled = 0)"

_BY_AWAITING = "INDEXED BY items_awaited"  # state_schema.AWAITING_INDEX
# Uploads `claimed_by_key` asks about in one statement: 3 parameters each, under
# SQLite's oldest limit (999); each an index seek and a row read (~15 ms at worst).
KEYS_A_STATEMENT = 200

@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One item as the state file holds it (what the report is made of)."""

    id: int
    run_id: str
    seq: int
    line: int
    client_id: str
    path: str
    file_name: str
    size: int | None
    sha256: str | None
    extra: dict[str, Any]
    stage: Stage
    error: str | None
    attempts: int
    key: str | None
    attachment_id: str | None
    outcome_unknown: bool
    snapshot_run: str | None
    duplicate_of: int | None
    uploaded_at: float | None
    verified: bool | None = None  # the record's bytes were downloaded and equal the file's
    replaces: str | None = None  # the earlier attachment of this row, other content
    disk_identity: str | None = None  # the file on disk when checked (localfs.disk_identity)


_COLUMNS = ("id, run_id, seq, line, client_id, path, file_name, size, sha256, extra, stage, "
            "error, attempts, key, attachment_id, outcome_unknown, snapshot_run, duplicate_of, "
            "uploaded_at, verified, replaces, disk_identity")


def _item(row: tuple[Any, ...]) -> ItemRecord:
    values = list(row)
    values[9] = json.loads(values[9])
    values[10] = Stage(values[10])
    values[15] = bool(values[15])
    values[19] = None if values[19] is None else bool(values[19])
    return ItemRecord(*values)



class Waiting(NamedTuple):
    """Of an upload awaiting its record, what a poll needs (`awaiting_by_name`,
    `awaiting_named`); the same names as `ItemRecord`'s."""

    id: int
    client_id: str
    file_name: str
    size: int | None
    key: str | None
    sha256: str | None
    seq: int
    snapshot_run: str | None
    uploaded_at: float | None


_WAITING = ", ".join(Waiting._fields)


class StateReads:
    """The state file's queries (mixed into `state.State`, which opens `_db`)."""

    _db: sqlite3.Connection

    def run_info(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT run_id, started_at, finished_at, outcome, last_upload_at FROM runs "
            "WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        return dict(zip(("run_id", "started_at", "finished_at", "outcome", "last_upload_at"),
                        row, strict=True))

    def latest_run_id(self) -> str | None:
        """The latest run that may have sent something (a dry run never did)."""
        row = self._db.execute("SELECT run_id FROM runs WHERE outcome IS NOT 'dry-run' "
                               "ORDER BY rowid DESC LIMIT 1").fetchone()
        return str(row[0]) if row else None

    def runs(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT r.run_id, r.started_at, r.finished_at, r.outcome, i.stage, count(i.id) "
            "FROM runs r LEFT JOIN items i ON i.run_id = r.run_id "
            "GROUP BY r.run_id, i.stage ORDER BY r.rowid").fetchall()
        out: dict[str, dict[str, Any]] = {}
        for run_id, started, finished, outcome, stage, count in rows:
            entry = out.setdefault(run_id, {"run_id": run_id, "started_at": started,
                                            "finished_at": finished, "outcome": outcome,
                                            "stages": {}})
            if stage is not None:
                entry["stages"][stage] = count
        return list(out.values())

    def held(self, ids: list[int]) -> dict[int, tuple[str, str, int]]:
        """Each of these items the file holds: (run_id, stage, sends)."""
        out: dict[int, tuple[str, str, int]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            out.update((row[0], (row[1], row[2], row[3])) for row in self._db.execute(
                "SELECT id, run_id, stage, sends FROM items "  # noqa: S608 (placeholders)
                f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk))
        return out

    def find_in_run(self, run_id: str, client_id: str, file_name: str,
                    sha256: str) -> ItemRecord | None:
        """The earliest admitted (not skipped) item of this run with the same identity
        (client, file name in NFC, sha256)."""
        # INDEXED BY: left alone, SQLite walks the (run_id, seq) index to skip the sort,
        # reading every item of the run per look-up (quadratic: 10k rows took 10 s).
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM items INDEXED BY items_identity_nfc "  # noqa: S608
            "WHERE run_id = ? AND client_id = ? AND name_nfc = ? "
            "AND sha256 = ? AND stage NOT IN ('skipped', 'invalid') ORDER BY seq LIMIT 1",
            (run_id, client_id, nfc(file_name), sha256)).fetchone()
        return _item(row) if row else None

    def find_earlier(self, run_id: str, client_id: str, file_name: str,
                     sha256: str) -> ItemRecord | None:
        """The most telling item of an earlier run with the same identity (client, file
        name in NFC, sha256).

        A validated one first; else one whose upload reached S3 or may have
        (it must be reconciled, not sent again); else None (send it). A name with
        surrounding spaces also finds the same file recorded without them: versions
        before names were kept exact sent and recorded it so.
        """
        names = [nfc(file_name)]
        if file_name.strip() != file_name and file_name.strip():
            names.append(nfc(file_name.strip()))
        for name in names:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM items WHERE run_id != ? AND client_id = ? "  # noqa: S608
                "AND name_nfc = ? AND sha256 = ? "
                "AND (stage IN ('validated', 'uploaded', 'missing') OR (stage = 'uploading')) "
                "ORDER BY CASE stage WHEN 'validated' THEN 0 ELSE 1 END, id DESC LIMIT 1",
                (run_id, client_id, name, sha256)).fetchone()
            if row:
                return _item(row)
        return None

    def row_upload(self, run_id: str, row: Row) -> ItemRecord | None:
        """The latest item of an earlier run for this very row (client, path, file
        name) that stands for a validated upload (validated, or skipped carrying its
        attachment): what a rerun compares the file on disk with."""
        found = self._db.execute(
            f"SELECT {_COLUMNS} FROM items INDEXED BY items_row "  # noqa: S608
            "WHERE client_id = ? AND path = ? AND file_name = ? AND run_id != ? "
            "AND stage IN ('validated', 'skipped') AND attachment_id IS NOT NULL "
            "ORDER BY id DESC LIMIT 1",
            (row.client_id, row.path, row.file_name, run_id)).fetchone()
        return _item(found) if found else None

    def sends_of(self, client_id: str, file_name: str, sha256: str) -> int:
        """How many times this file (client, file name in NFC, sha256) was sent over
        every run, resends within a run included: each item's presigned uploads
        (`sends`), or, for items of versions that did not count them, their distinct
        keys (an item carried to reconcile, or skipped, keeps the key of the upload it
        stands for and counts none; one presigned and never sent counts none either)."""
        found = self._db.execute(
            "SELECT COALESCE(SUM(sends), 0), COUNT(DISTINCT CASE WHEN stage NOT IN "
            "('seen', 'presigned') THEN key END) FROM items "
            "INDEXED BY items_identity_nfc WHERE client_id = ? AND name_nfc = ? "
            "AND sha256 = ? AND key IS NOT NULL AND stage != 'skipped'",
            (client_id, nfc(file_name), sha256)).fetchone()
        return max(int(found[0]), int(found[1])) if found else 0

    def item(self, item_id: int) -> ItemRecord | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM items WHERE id = ?",  # noqa: S608
                               (item_id,)).fetchone()
        return _item(row) if row else None

    def seqs(self, run_id: str) -> set[int]:
        """The row numbers (`seq`) this run has an item for."""
        cur = self._db.execute("SELECT seq FROM items WHERE run_id = ?", (run_id,))
        return {int(seq) for (seq,) in cur}

    def items(self, run_id: str) -> Iterator[ItemRecord]:
        cur = self._db.execute(
            f"SELECT {_COLUMNS} FROM items WHERE run_id = ? ORDER BY seq", (run_id,))  # noqa: S608
        for row in cur:
            yield _item(row)

    def validation_times(self, run_id: str) -> Iterator[tuple[float | None, float]]:
        """(uploaded_at, validated_at) of each validated item of the run, for the report's
        charts. `validated` is final, so its `updated_at` is when a poll saw the record."""
        cur = self._db.execute(
            "SELECT uploaded_at, updated_at FROM items WHERE run_id = ? AND stage = 'validated'",
            (run_id,))
        yield from cur

    def awaiting(self, run_id: str, client_id: str | None = None) -> list[ItemRecord]:
        """Items of the run whose upload reached S3 (or may have) and has no record yet
        (of one client, when given)."""
        if client_id is None:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM items {_BY_AWAITING} "  # noqa: S608
                f"WHERE run_id = ? AND {_AWAITING} ORDER BY seq", (run_id,)).fetchall()
        else:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM items {_BY_AWAITING} "  # noqa: S608
                f"WHERE run_id = ? AND client_id = ? AND {_AWAITING} ORDER BY seq",
                (run_id, client_id)).fetchall()
        return [_item(r) for r in rows]

    def awaiting_by_name(self, run_id: str, client_id: str, after: tuple[str, int] | None,
                         limit: int) -> list[Waiting]:
        """`awaiting(run_id, client_id)` in the order of their NFC names (then item id),
        at most `limit` after `after` (name, id): a poll cuts its uploads into groups of
        whole names (`reconcile/groups.py`). Walks the awaiting uploads' names (their
        own index), neither the run nor the patient's other rows."""
        name, item_id = after if after is not None else ("", -1)
        rows = self._db.execute(
            f"SELECT {_WAITING} FROM items {_BY_AWAITING} "  # noqa: S608
            "WHERE run_id = ? AND client_id = ? AND name_nfc >= ? AND (name_nfc > ? OR id > ?) "
            f"AND {_AWAITING} ORDER BY name_nfc, id LIMIT ?",
            (run_id, client_id, name, name, item_id, limit)).fetchall()
        return [Waiting._make(r) for r in rows]

    def awaiting_named(self, run_id: str, client_id: str, low: str, high: str | None
                       ) -> list[Waiting]:
        """`awaiting(run_id, client_id)` whose NFC name is from `low` (included) to
        `high` (excluded; None: no end), in item order."""
        bound, args = ("AND name_nfc < ? ", (high,)) if high is not None else ("", ())
        rows = self._db.execute(
            f"SELECT {_WAITING} FROM items {_BY_AWAITING} "  # noqa: S608
            f"WHERE run_id = ? AND client_id = ? AND name_nfc >= ? {bound}AND {_AWAITING} "
            "ORDER BY id", (run_id, client_id, low, *args)).fetchall()
        return [Waiting._make(r) for r in rows]

    def awaiting_count(self, run_id: str, client_id: str) -> tuple[int, float | None]:
        """How many of the client's uploads await a record, and when the latest of
        them ended (`uploaded_at`)."""
        row = self._db.execute(
            f"SELECT COUNT(*), MAX(uploaded_at) FROM items {_BY_AWAITING} "  # noqa: S608
            f"WHERE run_id = ? AND client_id = ? AND {_AWAITING}",
            (run_id, client_id)).fetchone()
        return int(row[0]), (None if row[1] is None else float(row[1]))

    def awaiting_since(self, run_id: str) -> tuple[dict[str, float], int]:
        """Per client with awaiting items, when the latest of their uploads ended (for a
        lost one, when its outcome was recorded); and how many items await."""
        rows = self._db.execute(
            "SELECT client_id, MAX(COALESCE(uploaded_at, updated_at)), COUNT(*) "  # noqa: S608
            f"FROM items {_BY_AWAITING} WHERE run_id = ? AND {_AWAITING} GROUP BY client_id",
            (run_id,)).fetchall()
        return {str(r[0]): float(r[1]) for r in rows}, sum(int(r[2]) for r in rows)

    def lost_uploads(self, run_id: str) -> list[ItemRecord]:
        """Items whose S3 answer was lost and that got no record by the deadline."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM items {_BY_AWAITING} "  # noqa: S608
            f"WHERE run_id = ? AND {_AWAITING} AND stage = 'missing' AND outcome_unknown = 1 "
            "ORDER BY seq", (run_id,)).fetchall()
        return [_item(r) for r in rows]

    def has_snapshot(self, run_id: str, client_id: str) -> bool:
        """Whether `run_id` took the client's snapshot (one cheap look-up)."""
        return self._db.execute("SELECT 1 FROM snapshot_done WHERE run_id = ? AND client_id = ?",
                                (run_id, client_id)).fetchone() is not None

    def snapshot(self, run_id: str, client_id: str) -> set[str] | None:
        """Record ids the client had before `run_id` uploaded for it; None if never taken."""
        if not self.has_snapshot(run_id, client_id):
            return None
        rows = self._db.execute(
            "SELECT record_id FROM snapshots WHERE run_id = ? AND client_id = ?",
            (run_id, client_id)).fetchall()
        return {r[0] for r in rows}

    def claimed(self, client_id: str) -> frozenset[str]:
        """Record ids already matched to some upload of this client, by any run."""
        rows = self._db.execute(
            "SELECT attachment_id FROM items INDEXED BY items_claimed "
            "WHERE client_id = ? AND stage = 'validated' AND attachment_id IS NOT NULL",
            (client_id,)).fetchall()
        return frozenset(r[0] for r in rows)

    def claimed_by_key(self, client_id: str,
                       uploads: Sequence[tuple[str, str | None, str]]) -> dict[str, str]:
        """Of these uploads of the client (file name, sha256, presigned key), those whose
        very key a validated item claimed a record with: key -> record id. Items that
        share a key share their identity (client, NFC name, sha256: one was carried from
        the other, `find_earlier`), so the identity index finds them: a poll asks of its
        own uploads, not of the patient's every claim. One pair it cannot find: a name
        with surrounding spaces that a version before exact names recorded stripped,
        carried by a later run under its exact name (`find_earlier`'s second look) and
        validated there; a `reconcile` of the earlier run then finds no record for its
        row (`missing`; no upload is sent again: the later row is validated)."""
        found: dict[str, str] = {}
        for start in range(0, len(uploads), KEYS_A_STATEMENT):
            chunk = uploads[start:start + KEYS_A_STATEMENT]
            values = ", ".join("(?, ?, ?)" for _ in chunk)
            found.update(self._db.execute(
                f"WITH up (name, sha256, key) AS (VALUES {values}) "  # noqa: S608 (marks)
                "SELECT up.key, c.attachment_id FROM up "
                "JOIN items c INDEXED BY items_identity_nfc ON c.client_id = ? "
                "AND c.name_nfc = up.name AND c.sha256 IS up.sha256 AND c.key = up.key "
                "WHERE c.stage = 'validated' AND c.attachment_id IS NOT NULL",
                [*(v for u in chunk for v in (nfc(u[0]), u[1], u[2])), client_id]))
        return found
