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
from pracsuite_ingest.reconcile.match import Evidence, Upload

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
