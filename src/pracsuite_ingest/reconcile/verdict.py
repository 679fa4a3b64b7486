"""The end-of-deadline verdict (pure): what is missing, why, and what may be sent again.

Only an upload whose client a complete poll after the deadline found without its
record may be sent again (docs/contract.md, "Guarantees"): one whose S3 answer was lost,
or one an earlier run sent (it was `missing` then, or the run stopped before its
verdict); an upload of this run that S3 took waits for the next run. A lost upload
whose client could not be asked stays unknown: the next run asks again before sending.
An upload left ambiguous (verify off), or whose candidates' bytes could not be read,
is never sent again on a guess. No file is sent
more than 1 + `reconcile.max_resends` times over every run (`sends`, counted in the
state file): after that it stays `missing`, saying so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pracsuite_ingest.models import Stage
from pracsuite_ingest.plural import counted
from pracsuite_ingest.reconcile.match import record_order

if TYPE_CHECKING:
    from pracsuite_ingest.state import ItemRecord


def is_lost(item: ItemRecord) -> bool:
    """S3's answer to the upload was lost (or never came): it may or may not be stored."""
    return item.outcome_unknown or item.stage is Stage.UPLOADING


def is_carried(item: ItemRecord) -> bool:
    """The upload was sent by an earlier run (carried to this one to be reconciled)."""
    return item.snapshot_run is not None and item.snapshot_run != item.run_id


def sends_note(sends: int, max_resends: int) -> str:
    """What the sends so far come to, for a `missing` item's error."""
    if sends > max_resends:
        return (f"; sent {sends} times over every run and PracSuite took it none of them: "
                f"not sent again (reconcile.max_resends = {max_resends}); check the file "
                "(an empty file, or a kind PracSuite refuses?)")
    return (f"; sent {counted(sends, 'time')} so far: the next run sends it again (at most "
            f"{max_resends + 1} sends in all, reconcile.max_resends = {max_resends})")


def ambiguous_error(records: list[str]) -> str:
    """Why an upload was left unclaimed with verification off, and what would decide."""
    ids = ", ".join(records)
    return (f"{len(records)} new PracSuite records share this file's name and size "
            f"(attachment ids {ids}) and name and size cannot tell which is this upload's; "
            "reconcile.verify = \"off\" reads no bytes, so none was claimed: set "
            "reconcile.verify = \"ambiguous\" and run `pracsuite-ingest reconcile` to let "
            "the bytes decide")


def _ids(records: Iterable[str]) -> str:
    """Attachment ids for a person to read: in id order."""
    return ", ".join(sorted(records, key=record_order))


def unread_error(records: list[str]) -> str:
    """Why an upload whose record the bytes were to decide was left unclaimed."""
    ids = _ids(records)
    return (f"{counted(len(records), 'new PracSuite record')} of this file's name and size "
            f"(attachment ids {ids}) could be this upload's, and the bytes that decide "
            "could not be read before the deadline (the storage refused, failed or was "
            "too slow; see the log's 'record bytes not read'): none was claimed and the "
            "file is not sent again; run `pracsuite-ingest reconcile` to read them again")


def differ_note(records: Set[str]) -> str:
    ids = _ids(records)
    return (f"; {len(records)} new record(s) with the same name and size hold other bytes "
            f"(attachment ids {ids}): someone else's, not claimed")


@dataclass(frozen=True, slots=True)
class Missing:
    """One upload without its record at the deadline: `error` for the report, and
    whether its outcome is unknown (a lost S3 answer)."""

    item_id: int
    error: str
    outcome_unknown: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    missing: list[Missing]
    resend: set[int]
    """Lost uploads PracSuite is known not to hold: the ones that may be sent again."""
    unasked: list[Missing] = field(default_factory=list)
    """Uploads S3 took whose patient's records no poll of the round could read: not
    declared missing (that would say PracSuite has no record, which nobody saw): they
    stay pending, saying why, and the next run asks again."""


def unasked_error(reason: str) -> str:
    why = f" ({reason})" if reason else ""
    return (f"S3 accepted the upload, but PracSuite's attachment list of this patient "
            f"could not be read at any poll before the deadline{why}; nothing is "
            "declared missing: run again (or `pracsuite-ingest reconcile`) to ask again")


def verdict(items: Iterable[ItemRecord], ambiguous: Mapping[int, list[str]],
            differ: Mapping[int, Set[str]], asked: Set[str], waited_s: float,
            sends: Mapping[int, int] | None = None, max_resends: int = 2,
            unread: Mapping[int, list[str]] | None = None, *,
            unlisted: Mapping[str, str] | None = None) -> Verdict:
    """The verdict on the uploads still awaiting a record. `asked`: the clients a
    complete poll after the deadline read; `waited_s`: how long reconcile waited;
    `sends`: how many times each item's file was sent over every run (none known: 1);
    `unread`: uploads with candidates whose bytes were to decide and were not read;
    `unlisted`: the clients whose records no poll of the round read, with why."""
    unread = unread or {}
    unlisted = unlisted or {}
    unasked: list[Missing] = []
    missing: list[Missing] = []
    resend: set[int] = set()
    for item in items:
        note = differ_note(differ[item.id]) if item.id in differ else ""
        sent = (sends or {}).get(item.id, 1)
        spent = sent > max_resends
        if item.id in ambiguous:
            # Its record may be among the candidates: never sent again on a guess.
            missing.append(Missing(item.id, ambiguous_error(ambiguous[item.id])))
        elif item.client_id in unlisted and not is_lost(item):
            unasked.append(Missing(item.id, unasked_error(unlisted[item.client_id])))
        elif unread.get(item.id):
            missing.append(Missing(item.id, unread_error(unread[item.id]) + note,
                                   outcome_unknown=is_lost(item)))
        elif is_lost(item):
            if item.client_id in asked and spent:
                error = (f"S3's answer to the upload was lost and no PracSuite record "
                         f"appeared within {waited_s:.0f}s{sends_note(sent, max_resends)}")
            elif item.client_id in asked:
                error = (f"S3's answer to the upload was lost and no PracSuite record "
                         f"appeared within {waited_s:.0f}s; sending it again")
                resend.add(item.id)
            else:
                error = ("S3's answer to the upload was lost and PracSuite could not be "
                         "asked whether it holds a record; the next run asks again "
                         "before sending it")
            missing.append(Missing(item.id, error, outcome_unknown=True))
        elif is_carried(item) and item.client_id in asked and not spent:
            error = (f"S3 accepted the upload (in run {item.snapshot_run}) but PracSuite "
                     f"still shows no record; sending it again{note}")
            resend.add(item.id)
            missing.append(Missing(item.id, error))
        else:
            error = (f"S3 accepted the upload but no PracSuite record appeared within "
                     f"{waited_s:.0f}s; run `pracsuite-ingest reconcile` later to look again"
                     f"{note}{sends_note(sent, max_resends)}")
            missing.append(Missing(item.id, error))
    return Verdict(missing, resend, unasked)
