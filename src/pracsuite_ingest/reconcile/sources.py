"""Where a poll reads its uploads from (I/O): the state, a page or a group of names at a
time (`StateUploads`), or a list already read (`ListUploads`: the verdict's last look,
and tests). Both answer in the order `groups.UploadIndex` needs.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from pracsuite_ingest.reconcile.big_polls import PAGE, sliced
from pracsuite_ingest.reconcile.match import Upload, nfc
from pracsuite_ingest.state import State
from pracsuite_ingest.state_reads import Waiting


class UploadSource(Protocol):
    def by_name(self) -> AsyncIterator[list[Upload]]:
        """Every upload, in pages, in the order of (NFC name, item id)."""
        ...

    async def named(self, low: str, high: str | None) -> list[Upload]:
        """The uploads whose NFC name is from `low` to `high` (excluded; None: to the
        end)."""
        ...


class ListUploads:
    def __init__(self, uploads: list[Upload]) -> None:
        keyed = sorted(((nfc(u.file_name), u.item_id), u) for u in uploads)
        self._keys = [k[0] for k, _ in keyed]
        self._uploads = [u for _, u in keyed]

    async def by_name(self) -> AsyncIterator[list[Upload]]:
        for start in range(0, len(self._uploads), PAGE):
            yield self._uploads[start:start + PAGE]

    async def named(self, low: str, high: str | None) -> list[Upload]:
        start = bisect.bisect_left(self._keys, low)
        end = len(self._keys) if high is None else bisect.bisect_left(self._keys, high)
        return self._uploads[start:end]


class StateUploads:
    """A client's uploads of a run awaiting a record, as the state holds them now."""

    def __init__(self, state: State, run_id: str, client_id: str,
                 upload_of: Callable[[Waiting], Upload]) -> None:
        self.state, self.run_id, self.client_id = state, run_id, client_id
        self.upload_of = upload_of

    async def by_name(self) -> AsyncIterator[list[Upload]]:
        after: tuple[str, int] | None = None
        while True:
            page = self.state.awaiting_by_name(self.run_id, self.client_id, after, PAGE)
            if page:
                yield await sliced(page, self.upload_of)
            if len(page) < PAGE:
                return
            after = (nfc(page[-1].file_name), page[-1].id)
            del page
            await asyncio.sleep(0)

    async def named(self, low: str, high: str | None) -> list[Upload]:
        rows = self.state.awaiting_named(self.run_id, self.client_id, low, high)
        return await sliced(rows, self.upload_of)
