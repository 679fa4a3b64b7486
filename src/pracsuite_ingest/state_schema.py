"""The state file's schema, and how a state file of an earlier version is brought up to
this one at open (`upgrade`): columns added, indexes as this version has them, small
pages for a new file. Every other statement is in `state.py`."""

from __future__ import annotations

import sqlite3
import unicodedata

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  outcome TEXT NOT NULL DEFAULT 'running',
  last_upload_at REAL
);
CREATE TABLE IF NOT EXISTS items (
  id INTEGER PRIMARY KEY,
  run_id TEXT NOT NULL REFERENCES runs(run_id),
  seq INTEGER NOT NULL,
  line INTEGER NOT NULL,
  client_id TEXT NOT NULL,
  path TEXT NOT NULL,
  file_name TEXT NOT NULL,
  size INTEGER,
  sha256 TEXT,
  extra TEXT NOT NULL DEFAULT '{}',
  stage TEXT NOT NULL,
  error TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  key TEXT,
  attachment_id TEXT,
  outcome_unknown INTEGER NOT NULL DEFAULT 0,
  snapshot_run TEXT,
  duplicate_of INTEGER,
  uploaded_at REAL,
  updated_at REAL NOT NULL,
  name_nfc TEXT,
  verified INTEGER,
  UNIQUE (run_id, seq)
);
CREATE TABLE IF NOT EXISTS transitions (
  item_id INTEGER NOT NULL REFERENCES items(id),
  stage TEXT NOT NULL,
  at REAL NOT NULL
);
-- The audit trail writes itself, in the same implicit transaction as the change:
-- one statement, one commit per stage change.
CREATE TRIGGER IF NOT EXISTS items_added AFTER INSERT ON items BEGIN
  INSERT INTO transitions VALUES (NEW.id, NEW.stage, NEW.updated_at);
END;
CREATE TRIGGER IF NOT EXISTS items_moved AFTER UPDATE OF stage ON items BEGIN
  INSERT INTO transitions VALUES (NEW.id, NEW.stage, NEW.updated_at);
END;
CREATE TABLE IF NOT EXISTS snapshots (
  run_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  record_id TEXT NOT NULL,
  PRIMARY KEY (run_id, client_id, record_id)
);
CREATE TABLE IF NOT EXISTS snapshot_done (
  run_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  PRIMARY KEY (run_id, client_id)
);
"""

# An upload that reached S3 (or may have) and has no record yet: what reconcile asks about
# (`state.py` adds `settled = 0`: a `missing` file whose resends ran out is not awaited).
AWAITING_STAGES = ("(stage IN ('uploaded', 'missing') "
                   "OR (stage = 'uploading' AND outcome_unknown = 1))")

# Columns added after the first release: a state file without them gains them at open.
# disk_identity: the file's identity on disk when it was checked (`localfs.disk_identity`:
# device, inode, size, mtime_ns, ctime_ns), what lets a rerun skip it unread;
# replaces: the attachment an earlier run validated for the same row, other content;
# sends: the presigned uploads this item started (each key once; resends included);
# settled: a `missing` item whose resends ran out (reconcile.max_resends): not awaited.
ADDED_COLUMNS = (("name_nfc", "TEXT"), ("verified", "INTEGER"), ("disk_identity", "TEXT"),
                 ("replaces", "TEXT"), ("sends", "INTEGER NOT NULL DEFAULT 0"),
                 ("settled", "INTEGER NOT NULL DEFAULT 0"))
NFC_INDEX = ("CREATE INDEX IF NOT EXISTS items_identity_nfc "
             "ON items (client_id, name_nfc, sha256)")
ROW_INDEX = "CREATE INDEX IF NOT EXISTS items_row ON items (client_id, path, file_name)"
# The uploads awaiting a record, and only those: what every poll asks for. Partial (an
# item enters it at `uploaded` and leaves it at `validated`), so a poll reads the items
# it asks about, never the whole run, and the other stage changes do not write it.
# The queries name it (INDEXED BY): left alone, SQLite walks (run_id, seq) to skip a sort.
# Its condition is the stages' only (the same in every state file, whichever version
# created it); the queries' `settled = 0` filters the few settled items it holds.
# - In the order of their names (then item): a poll reads its patient's uploads a group
#   of names at a time (reconcile/groups.py); through the identity index, that walked
#   every row the patient ever had, in every run (a nightly practice's history).
# - Covering for the counts a poll round asks (`awaiting_since`, `awaiting_count`: how
#   many await, the latest upload's end): read through the rows, they held the event
#   loop 120-330 ms a round with one patient's 100,000 uploads awaiting
#   (bench/loop_watch.py's `held_at`).
# One index for both: every upload enters it and leaves it, and each commit rewrites
# the pages where a patient's entries come and go. Two (`items_waiting` in input order
# for the counts, `items_awaiting_names` by name) cost ~300 WAL frames a commit at
# 10^5 files with polls behind the uploads, as much as the table's own
# (bench/state_bytes.py). The few readers in input order (`awaiting`) sort what they
# read. A state file of an earlier version drops the old ones and builds this at open.
AWAITING_INDEX = ("CREATE INDEX IF NOT EXISTS items_awaited ON items "
                  "(run_id, client_id, name_nfc, id, settled, stage, outcome_unknown, "
                  f"uploaded_at, updated_at) WHERE {AWAITING_STAGES}")
# The records a patient's uploads claimed, in any run: every poll leaves them out
# (`StateReads.claimed`). Covering: read through the rows, a patient's 100,000 claims
# held the event loop 184 ms a poll (bench/loop_watch.py). Still as long as the
# patient's history: a poll walks the patient's records in PracSuite, which are as
# many. Narrow, in the order of the items: a commit's new claims go at the end of each
# patient's entries, ~60 to a page. Its forebear (`items_claims`: client, record id,
# key, stage; ~9 entries a page, landing all over the patient's entries) was 0.48 KB of
# WAL a file at 10^4 1 KB files, its pages written 4.2 times each, every commit's
# splits rewriting their neighbours (bench/state_bytes.py); the keys a poll asks about
# are its own uploads', found through the identity index (`claimed_by_key`). Dropped
# at open.
# `stage` is there for SQLite (3.40) to read the index alone: the condition names it.
CLAIMS_INDEX = ("CREATE INDEX IF NOT EXISTS items_claimed ON items (client_id, id, "
                "attachment_id, stage) WHERE stage = 'validated' AND attachment_id IS NOT NULL")


def nfc(name: str) -> str:
    """A file name as identity compares it: Unicode NFC, so that the same name written
    composed (NFC) or decomposed (NFD, as macOS writes it) is one name."""
    return unicodedata.normalize("NFC", name)


def upgrade(conn: sqlite3.Connection) -> None:
    """Add the columns a state file of an earlier version lacks, and fill `name_nfc`;
    the indexes as this version has them; small pages for a new state file."""
    _small_pages(conn)
    have = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
    missing = [(name, kind) for name, kind in ADDED_COLUMNS if name not in have]
    if missing:
        conn.execute("BEGIN")
        for name, kind in missing:
            conn.execute(f"ALTER TABLE items ADD COLUMN {name} {kind}")
        rows = conn.execute("SELECT id, file_name FROM items").fetchall()
        conn.executemany("UPDATE items SET name_nfc = ? WHERE id = ?",
                         [(nfc(name), item_id) for item_id, name in rows])
        conn.execute("COMMIT")
    conn.execute(NFC_INDEX)
    conn.execute(ROW_INDEX)
    conn.execute(AWAITING_INDEX)  # state files of earlier versions gain it at open
    conn.execute(CLAIMS_INDEX)
    conn.execute("DROP INDEX IF EXISTS items_run_stage")  # see AWAITING_INDEX
    for forebear in ("items_awaiting", "items_waiting", "items_awaiting_names"):
        conn.execute(f"DROP INDEX IF EXISTS {forebear}")  # what AWAITING_INDEX replaced
    conn.execute("DROP INDEX IF EXISTS items_claims")  # CLAIMS_INDEX's forebear
    # (client_id, file_name, sha256): every look-up by identity uses name_nfc
    # (NFC_INDEX); kept, it cost a page written per new item (bench/state_writes.py).
    conn.execute("DROP INDEX IF EXISTS items_identity")


# A commit writes every page it changed, whole, to the WAL (then, at a checkpoint, to
# the file): with 4 KB pages, about 4 pages, 16 KB, per stage change committed. A row
# of `items` is a few hundred bytes, so 1 KB pages write a quarter of that (bench/scale.py).
PAGE_SIZE = 1024


def _small_pages(conn: sqlite3.Connection) -> None:
    """A state file that holds nothing yet gets PAGE_SIZE pages. SQLite fixes the page
    size of a WAL file: it is set in rollback mode, by VACUUM (instant on empty tables),
    then WAL again. A file with rows keeps its pages (a VACUUM would rewrite it whole)."""
    if conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE:
        return
    if conn.execute("SELECT EXISTS (SELECT 1 FROM items) OR EXISTS (SELECT 1 FROM runs)"
                    ).fetchone()[0]:
        return
    if conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] != "delete":
        return  # another connection has it open: leave it as it is
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("VACUUM")
    conn.execute("PRAGMA journal_mode=WAL")
