"""What is already known to be refused, said before anything is sent (pure).

PracSuite publishes no rule for 0-byte files (pracsuite-api.md, "Unknown"); the
sandbox plays both (`--accept-empty-files`). Where an operator knows PracSuite's
validation refuses them, `upload.empty_files = "refuse"` makes such a file `invalid` at
the scan, so no run sends it, waits for it and carries it `missing` forever.

The state file knows the rest: how many times the same file (client, name in NFC,
sha256) was sent, by distinct presigned keys, over every run (`State.sends_of`). A dry
run says so for a file it would reconcile or send again, and a `missing` item's error
says how often PracSuite did not take it, not only "look again later".
"""

from __future__ import annotations

from pracsuite_ingest.plural import counted

EMPTY_REFUSED = ("the file is empty (0 bytes) and upload.empty_files = \"refuse\" (PracSuite "
                 "does not take empty files); not sent")


def empty_file_problem(size: int, empty_files: str) -> str | None:
    """Why a checked file of `size` bytes is not sent, or None."""
    return EMPTY_REFUSED if size == 0 and empty_files == "refuse" else None


def earlier_sends_note(sends: int, size: int) -> str:
    """The part of a dry-run item's or a `missing` item's error that says what earlier
    sends of the same file came to ("" when it was never sent)."""
    if sends <= 0:
        return ""
    note = f"sent {counted(sends, 'time')} so far and PracSuite showed no record"
    if size == 0:
        note += ("; it is empty (0 bytes), which PracSuite may refuse: if so, set "
                 "upload.empty_files = \"refuse\"")
    return note


def dry_run_error(sends: int, size: int) -> str:
    """The error of a dry-run item that an earlier run sent and PracSuite did not take."""
    note = earlier_sends_note(sends, size)
    return "dry run: would be reconciled" + (f" ({note})" if note else "")


def missing_error(waited_s: float, sends: int, size: int, note: str = "") -> str:
    """A `missing` item's error: how long was waited, how often it was sent, what next
    (polling.py's wording until now: "S3 accepted the upload but no PracSuite record
    appeared within Ns; run `pracsuite-ingest reconcile` later to look again")."""
    sent = earlier_sends_note(sends, size)
    return (f"S3 accepted the upload but no PracSuite record appeared within "
            f"{waited_s:.0f}s ({sent}); run `pracsuite-ingest reconcile` later to look "
            f"again{note}")
