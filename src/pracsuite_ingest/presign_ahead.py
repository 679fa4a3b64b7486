"""Presign ahead of the upload slots: a slot that frees starts its next upload at once.

Without it each of the `upload.concurrency` slots checks a file, presigns it and only
then uploads it, so every upload waits for an API round trip first. Here the intake
works on a few files more than there are upload slots (`lookahead`): while every slot
is busy they are checked, admitted, their client snapshotted and presigned, and then
wait, presigned, for a slot (`ready`). When the API keeps up, a slot that frees finds a
presigned file waiting.

Two limits, both taken before the work they bound, so tasks and memory stay bounded:
- `rows`: files being worked on (upload.concurrency + lookahead), taken by the intake
  before it starts a file's task;
- `uploads`: uploads in flight (upload.concurrency), taken by a presigned file before
  its first byte goes out.
While every upload slot is busy at most `lookahead` files wait presigned.

A presigned POST has a lifetime PracSuite does not publish, and whether it expired is
S3's to judge (docs/contract.md), never this machine's clock. A file waits presigned about one
presign round trip when the API keeps up; behind slow uploads, about lookahead /
concurrency upload times (the lookahead is a few files, not a queue of the input). A
policy that expires meanwhile (an upload slower than a policy's lifetime) is refused
by S3 and the file presigned again in its slot (`PolicyExpired`), as without the
lookahead: at most one presign more for it.

A file presigned but not yet uploading when the run stops is never sent by this run:
it keeps the stage `presigned` (reported `pending`), and the next run sends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


def lookahead(presign_concurrency: int) -> int:
    """How many files are worked on beyond the upload slots.

    Enough when the API keeps up: a slot frees every T_upload / concurrency, and a file
    takes T_presign to presign, so concurrency x T_presign / T_upload files must be on
    their way; the API keeps up only when presign_concurrency / T_presign is at least
    concurrency / T_upload, i.e. when that number is at most presign_concurrency.
    Twice that leaves room for the spread of answer times, and stays a few files.
    """
    return 2 * presign_concurrency


class PresignAhead:
    """The intake's two limits and how many presigned files wait for a slot."""

    def __init__(self, concurrency: int, presign_concurrency: int) -> None:
        self.lookahead = lookahead(presign_concurrency)
        self.rows = asyncio.Semaphore(concurrency + self.lookahead)
        self.uploads = asyncio.Semaphore(concurrency)
        self.ready = 0  # presigned, waiting for an upload slot
        self.ready_peak = 0  # the most that ever waited at once
        self.waited = 0  # files that found every upload slot busy once presigned

    @asynccontextmanager
    async def upload_slot(self) -> AsyncIterator[None]:
        """Wait, presigned, for an upload slot, and hold it."""
        if self.uploads.locked():
            self.waited += 1
        self.ready += 1
        self.ready_peak = max(self.ready_peak, self.ready)
        try:
            await self.uploads.acquire()
        finally:
            self.ready -= 1
        try:
            yield
        finally:
            self.uploads.release()
