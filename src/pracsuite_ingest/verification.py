"""Byte-level proof: a record's bytes, downloaded and hashed, compared with the file's.

A record's `presign_url` answer holds `url`, a short-lived presigned GET of its bytes
on the storage (S3), not on PracSuite's API: the download costs no API call and does
not count against `api.requests_per_second`. `Verifier` streams it in chunks, hashing
as it goes (never a whole file in memory), stops reading past the largest size that
could be ours, and bounds its downloads by its own concurrency
(`reconcile.verify_concurrency`). It never sends the API keys: the URL carries its
own signature. What to download, and what a digest means, is decided in
`reconcile.claims.decide_claims`; this module only fetches.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

import aiohttp
from yarl import URL

from pracsuite_ingest.errors import Permanent, Retryable
from pracsuite_ingest.guards import cleartext_problem
from pracsuite_ingest.reconcile.claims import Digest
from pracsuite_ingest.reconcile.records import PresignAnswer

CHUNK_BYTES = 256 * 1024
URL_FRESH_S = 60.0  # a presigned GET older than this is read again before use


class VerifyFailed(Exception):
    """A record's bytes could not be read now (refused, cut, unreachable); the next
    poll tries again. The message names no URL (it carries a signature)."""


class Verifier:
    """Downloads records' bytes, `concurrency` at a time, into `Digest`s.

    `bytes_read` and `downloads` count what verification cost.
    """

    def __init__(self, session: aiohttp.ClientSession, concurrency: int,
                 *, read_timeout_s: float = 120.0, base_url: str | None = None) -> None:
        self._session = session
        self._base_url = base_url  # api.base_url: http:// downloads only for the sandbox
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10,
                                              sock_read=read_timeout_s)
        self.downloads = 0
        self.bytes_read = 0

    async def digest(self, url: str, limit: int) -> Digest:
        """sha256 and size of the object at `url`; reading stops past `limit` bytes
        (the digest then has size `limit + 1` and matches no file). The caller holds
        one of the download slots (`digest_records` does)."""
        if not url:
            raise VerifyFailed("the record's presign_url answer has no url")
        problem = cleartext_problem(url, "the record's download URL", self._base_url)
        if problem:  # a patient's file would cross the network in clear text
            raise VerifyFailed(problem)
        digest = hashlib.sha256()
        size = 0
        self.downloads += 1
        try:
            # As given: a presigned URL is signed over its exact encoding.
            async with self._session.get(URL(url, encoded=True), timeout=self._timeout,
                                         allow_redirects=False) as resp:
                if resp.status != 200:
                    raise VerifyFailed(f"the storage answered {resp.status} to the "
                                       "download of the record's bytes")
                async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                    size += len(chunk)
                    self.bytes_read += len(chunk)
                    if size > limit:
                        return Digest(limit + 1, "")
                    digest.update(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise VerifyFailed(f"the download of the record's bytes failed "
                               f"({type(exc).__name__})") from None
        return Digest(size, digest.hexdigest())

    async def digest_bounded(self, url: str, limit: int) -> Digest:
        """`digest`, waiting for one of the download slots first."""
        async with self._slots:
            return await self.digest(url, limit)

    async def digest_records(
        self,
        record_ids: list[str],
        answers: dict[str, PresignAnswer],
        read_answer: Callable[[str], Awaitable[PresignAnswer]],
        limit: int,
        digests: dict[str, Digest],
        on_error: Callable[[str, str], None],
    ) -> None:
        """Each record's digest into `digests`; its `presign_url` is read again
        (`read_answer`, an API call) when the one known is missing or not fresh. A record
        that cannot be read now is passed to `on_error` and left out."""

        async def one(rid: str) -> None:
            try:
                answer = answers.get(rid)
                if answer is None or not answer.url or \
                        time.monotonic() - answer.read_at > URL_FRESH_S:
                    answer = await read_answer(rid)
                    answers[rid] = answer
                digests[rid] = await self.digest(answer.url, limit)
            except (VerifyFailed, Permanent, Retryable) as exc:
                answers.pop(rid, None)  # an expired URL: read a fresh one next time
                on_error(rid, str(exc))
            finally:
                self._slots.release()

        async with asyncio.TaskGroup() as tg:
            for rid in record_ids:
                await self._slots.acquire()  # the slot before the task starts
                tg.create_task(one(rid))
