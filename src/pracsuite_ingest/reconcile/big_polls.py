"""One patient with many uploads: a poll's work without holding the event loop.

A poll of a patient with 10,000 uploads used to hold the loop for a minute (100,000:
for many minutes): while it matched, nothing else ran, not the uploads of other
patients, not the progress display, not the answer to a SIGTERM. Here, what a poll
decides in pure code runs in a thread when the poll is big (`compute`: the inputs are
built before and not changed while it runs), and the per-item work that must stay on
the loop (building the uploads from the state's rows, writing claims) runs in slices
that give the loop back every `SLICE_S` (`sliced`). Small polls run inline: a thread's
hand-off costs more than they do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Set
from typing import ParamSpec, TypeVar

from pracsuite_ingest.reconcile.claims import Claims, Digest, VerifyMode, decide_claims
from pracsuite_ingest.reconcile.match import Evidence, Upload, nfc
from pracsuite_ingest.state import State
from pracsuite_ingest.state_reads import Waiting

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

SLICE_S = 0.02  # the longest a slice of per-item work holds the loop
PAGE = 2000  # items read from the state at a time
BIG = 500  # uploads (or records) from which a poll's pure work goes to a thread
_CHECK_EVERY = 64  # items between two looks at the clock


async def compute(size: int, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`fn(*args)`, in a thread when `size` (the items it works on) is BIG or more.

    `fn` must be pure and its arguments not changed until it returns (pass copies of
    anything the loop mutates meanwhile). Cancelling the caller does not stop the
    thread; what it computes is then dropped."""
    if size < BIG:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


class Slices:
    """Per-item work on the loop, given back to it whenever a slice has run `SLICE_S`:
    `await slices.tick()` after each item."""

    def __init__(self) -> None:
        self._count = 0
        self._until = time.monotonic() + SLICE_S

    async def tick(self) -> None:
        self._count += 1
        if self._count % _CHECK_EVERY == 0 and time.monotonic() >= self._until:
            await asyncio.sleep(0)
            self._until = time.monotonic() + SLICE_S


async def sliced(items: Iterable[T], fn: Callable[[T], R]) -> list[R]:
    """`[fn(item) for item in items]`, in `Slices`."""
    out: list[R] = []
    slices = Slices()
    for item in items:
        out.append(fn(item))
        await slices.tick()
    return out


async def awaiting_uploads(state: State, run_id: str, client_id: str,
                           upload_of: Callable[[Waiting], Upload]
                           ) -> tuple[list[Upload], float | None]:
    """The client's uploads awaiting a record, each page of the state's rows turned into
    `Upload`s as it is read (a row holds far more than a poll needs: 100,000 rows were
    some 100 MB), and the latest `uploaded_at` among them."""
    out: list[Upload] = []
    latest: float | None = None
    after = -1
    while True:
        page = state.awaiting_after(run_id, client_id, after, PAGE)
        slices = Slices()
        for item in page:
            out.append(upload_of(item))
            if item.uploaded_at is not None and (latest is None or item.uploaded_at > latest):
                latest = item.uploaded_at
            await slices.tick()
        if len(page) < PAGE:
            return out, latest
        after = page[-1].seq
        del page
        await asyncio.sleep(0)


def by_name(uploads: Iterable[Upload]) -> dict[str, list[Upload]]:
    """Uploads by their file name in NFC (pure)."""
    out: dict[str, list[Upload]] = {}
    for up in uploads:
        out.setdefault(nfc(up.file_name), []).append(up)
    return out


def deciding(record_ids: Iterable[str], uploads: Iterable[Upload], evidence: Evidence
             ) -> dict[str, list[Upload]]:
    """For each of `record_ids`, the uploads (in `uploads` order) that it is proven or
    named for: whose file's checksum may decide it. Pure, one pass over the uploads
    (asking each record of every upload cost a poll of one patient's 10,000 uploads
    10^8 look-ups)."""
    wanted = set(record_ids)
    out: dict[str, list[Upload]] = {}
    for up in uploads:
        proven = evidence.proven.get(up.item_id)
        linked = [proven] if proven is not None else []
        for rid in dict.fromkeys([*linked, *evidence.named.get(up.item_id, ())]):
            if rid in wanted:
                out.setdefault(rid, []).append(up)
    return out


def plan_reads(uploads: list[Upload], evidence: Evidence, mode: VerifyMode,
               digests: Mapping[str, Digest], crowded: Set[int] = frozenset()
               ) -> tuple[Claims, dict[str, list[Upload]]]:
    """`decide_claims`, and for each record it wants read, the uploads it may decide
    (`deciding`). Pure."""
    decision = decide_claims(uploads, evidence, mode, digests, crowded)
    return decision, deciding(decision.download, uploads, evidence)
