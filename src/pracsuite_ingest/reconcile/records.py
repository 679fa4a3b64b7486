"""Reading PracSuite's records (I/O): a client's list, and the `presign_url` answers of
new records (their file name, and a short-lived GET of their bytes).

`Relevant.view` turns a record as PracSuite sends it into what matching sees (`match.py`);
`RecordReader` keeps what it learned across polls (names, answers), so that no record's
name is asked twice in a run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Set
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol, TypeVar, overload

from pracsuite_ingest.api import PageRef, RecordRef
from pracsuite_ingest.errors import IngestError
from pracsuite_ingest.reconcile.facts import RecordFacts, Relevant, view
from pracsuite_ingest.reconcile.groups import UploadIndex
from pracsuite_ingest.reconcile.match import RecordView

T = TypeVar("T")

NAME_LOOKUPS_IN_FLIGHT = 8  # the rate limit still applies; this only overlaps round trips
ANSWERS_KEPT = 2_000  # `presign_url` answers kept for verification (the latest ones)


class Recent(dict[str, "PresignAnswer"]):
    """The latest `ANSWERS_KEPT` answers: each holds a presigned URL of some 400 bytes,
    and a poll of 100,000 new records read as many. An answer not kept is asked for
    again if its record's bytes are to be read (its URL expires within minutes anyway)."""

    def __setitem__(self, key: str, value: PresignAnswer) -> None:
        super().pop(key, None)
        super().__setitem__(key, value)
        while len(self) > ANSWERS_KEPT:
            del self[next(iter(self))]


class RecordSource(Protocol):
    """What the polling loop needs from PracSuite (the API client satisfies it)."""

    def first_page(self, client_id: str) -> PageRef: ...

    async def list_page(self, client_id: str, ref: PageRef) -> tuple[
        list[dict[str, Any]], PageRef | None]: ...

    async def record_presign(self, ref: RecordRef) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class PresignAnswer:
    """A record's `presign_url` answer: its file name and a short-lived presigned GET
    of its bytes on the storage, read at `read_at` (monotonic seconds)."""

    file_name: str
    url: str
    read_at: float


def presign_answer(data: Mapping[str, Any], now: float) -> PresignAnswer:
    url = data.get("url")
    return PresignAnswer(str(data.get("file_name") or ""),
                         url if isinstance(url, str) else "", now)


class Retrier(Protocol):
    """Runs one API call under the retry policy (`retry.retrying` with the settings)."""

    async def __call__(self, op: Callable[[], Awaitable[T]]) -> T: ...


@overload
async def list_records(api: RecordSource, client_id: str, call: Retrier) -> list[RecordView]:
    ...


@overload
async def list_records(api: RecordSource, client_id: str, call: Retrier,
                       keep: Callable[[Mapping[str, Any]], T | None],
                       expected: int = 0) -> list[T]:
    ...


async def list_records(api: RecordSource, client_id: str, call: Retrier,
                       keep: Callable[[Mapping[str, Any]], Any] = view,
                       expected: int = 0) -> list[Any]:
    """What `keep` keeps of every record of the client (default: its `view`), each page
    fetched (and retried) on its own and reduced before the next is asked for.

    `expected`: the records the client legitimately has, as the caller knows it: the
    walk's caps grow with it (list_walk.py)."""
    out: list[Any] = []
    ref: PageRef | None = api.first_page(client_id)
    if ref is not None and ref.walk is not None and expected:
        ref = replace(ref, walk=ref.walk.expecting(expected))
    while ref is not None:
        records, ref = await call(partial(api.list_page, client_id, ref))
        out.extend(v for v in (keep(r) for r in records) if v is not None)
        del records  # the page's parsed records: only what `keep` kept stays
    return out


OnAnswer = Callable[[str, PresignAnswer], Awaitable[None]]


def _plain_link(api: RecordSource) -> Callable[[str], str] | None:
    """The `presign_url` the API client asks for a record without a link of its own
    (None: this source does not say)."""
    url_of = getattr(api, "presign_url_of", None)
    if url_of is None:
        return None

    def plain(rid: str) -> str:
        try:
            return str(url_of(RecordRef(rid, "")))
        except IngestError:  # an id no URL can hold: keep its own link, if any
            return ""

    return plain


class RecordReader:
    """A client's records, matched against its uploads; the `presign_url` names and
    answers learned are kept for later polls (`names`, `answers`: verification reads and
    refreshes the latter)."""

    def __init__(self, api: RecordSource, call: Retrier) -> None:
        self.api = api
        self.call = call
        self.names: dict[str, str] = {}
        self.answers: dict[str, PresignAnswer] = Recent()

    async def presign(self, rid: str, link: str = "") -> PresignAnswer:
        """The record's `presign_url` answer now (following its own link if given)."""
        data = await self.call(partial(self.api.record_presign, RecordRef(rid, link)))
        return presign_answer(data, time.monotonic())

    def relevant(self, index: UploadIndex, hidden: Set[str]) -> Relevant:
        """What a walk keeps of each record for the uploads `index` holds; `hidden`:
        records none of them may claim."""
        return Relevant.indexed(index, hidden, _plain_link(self.api))

    async def walk(self, client_id: str, relevant: Relevant, expected: int
                   ) -> RecordFacts:
        """The client's records that one of the poll's uploads may claim, each reduced to
        what `relevant` keeps (matched in groups: `groups.py`, `poll.py`)."""
        facts = RecordFacts()

        def keep(record: Mapping[str, Any]) -> None:
            rec = relevant.view(record)
            if rec is not None:
                facts.append(rec)

        await list_records(self.api, client_id, self.call, keep, expected)
        return facts

    def forget(self, record_id: str) -> None:
        """A claimed record: what was read of it is not needed again."""
        self.names.pop(record_id, None)
        self.answers.pop(record_id, None)

    async def read_names(self, record_ids: list[str], on_answer: OnAnswer | None = None,
                         links: Mapping[str, str] | None = None) -> None:
        """The `presign_url` answers of `record_ids` into `names` and `answers`, a few
        requests at a time. `on_answer` is awaited with each answer in the same slot
        (verification downloads a candidate's bytes there, while its URL is fresh,
        instead of after every name is read).

        One after the other, 2,000 new records took 2,000 round trips. The first lookup
        that fails for good is raised; the others are cancelled (the answers read before
        it are kept). `links`: the records' own `links.presign_url`, followed where given.
        """
        links = links or {}
        slots = asyncio.Semaphore(NAME_LOOKUPS_IN_FLIGHT)

        async def one(rid: str) -> None:
            try:
                answer = await self.presign(rid, links.get(rid, ""))
                # Not interned: the uploads it could share a string with are not held
                # (`groups.py`), and 100,000 distinct names would only grow the table.
                self.names[rid] = answer.file_name
                self.answers[rid] = answer
                if on_answer is not None:
                    await on_answer(rid, answer)
            finally:
                slots.release()

        try:
            async with asyncio.TaskGroup() as tg:
                for rid in record_ids:
                    await slots.acquire()  # the slot before the task: no pile of waiting tasks
                    tg.create_task(one(rid))
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
