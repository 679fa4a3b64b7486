"""Byte-level proof: a record's bytes compared with the file's, at the least cost.

A record's `presign_url` answer holds `url`, a short-lived presigned GET of its bytes
on the storage (S3), not on PracSuite's API: reading it costs no API call and does not
count against `api.requests_per_second`. Where a checksum suffices, `Verifier` first
asks for one byte (`Range: bytes=0-0`): a 206 whose `ETag` is a plain MD5 (32 hex
digits, S3's checksum of a single-part upload, kept by a server-side copy) and whose
`Content-Range` gives the total size settles it without a download. Any other answer
is read as a download: a 200 (the storage ignored the Range) is the whole body; an
ETag missing, multipart-looking (`...-N`) or otherwise not a plain MD5, a 416 (an
empty object) or a 206 without a total size lead to a plain GET. A download is
streamed in chunks and hashed (sha256 and MD5) as it goes, never whole in memory,
and stops past the largest size that could be ours. Downloads are bounded by the
verifier's own concurrency (`reconcile.verify_concurrency`). The API keys are never
sent: the URL carries its own signature. What to read, and what a digest means, is
decided in `reconcile.claims.decide_claims`; this module only fetches (and reads a
local file's MD5 back, `file_md5`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Set
from dataclasses import replace
from pathlib import Path

import aiohttp
from yarl import URL

from pracsuite_ingest.errors import Permanent, Retryable
from pracsuite_ingest.guards import cleartext_problem
from pracsuite_ingest.localfs import open_regular
from pracsuite_ingest.proxy import for_session
from pracsuite_ingest.reconcile.claims import Digest
from pracsuite_ingest.reconcile.match import Upload
from pracsuite_ingest.reconcile.records import PresignAnswer

CHUNK_BYTES = 256 * 1024
URL_FRESH_S = 60.0  # a presigned GET older than this is read again before use
_PLAIN_MD5 = re.compile(r'"([0-9a-fA-F]{32})"|([0-9a-fA-F]{32})')
_TOTAL = re.compile(r"bytes\s+\d+-\d+/(\d+)")


def plain_md5(etag: str | None) -> str | None:
    """The MD5 an ETag states, lower case; None unless it is a plain MD5 (32 hex digits,
    bare or in one pair of quotes): a multipart ETag (`"...-3"`), a weak one (`W/"..."`)
    or anything else says nothing about the bytes' MD5."""
    found = _PLAIN_MD5.fullmatch(etag.strip()) if etag else None
    if found is None:
        return None
    return (found.group(1) or found.group(2)).lower()


def total_size(content_range: str | None) -> int | None:
    """The object's whole size from a 206's `Content-Range: bytes 0-0/N`."""
    found = _TOTAL.fullmatch(content_range.strip()) if content_range else None
    return int(found.group(1)) if found else None


def file_md5(path: Path, sha256: str, size: int | None) -> str | None:
    """The MD5 of the local file at `path` if it still holds the bytes that were sent
    (its sha256 and size those recorded), else None. Blocking: run in a thread."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    count = 0
    try:
        # A regular file only, not through a link (never blocks on a FIFO put there).
        with open_regular(path, nofollow=True) as fh:
            while chunk := fh.read(CHUNK_BYTES):
                count += len(chunk)
                md5.update(chunk)
                sha.update(chunk)
    except OSError:
        return None
    if sha.hexdigest() != sha256 or (size is not None and count != size):
        return None
    return md5.hexdigest()


class VerifyFailed(Exception):
    """A record's bytes could not be read now (refused, cut, unreachable); the next
    poll tries again. The message names no URL (it carries a signature)."""


class FileMD5s:
    """The MD5 of uploads' files (`file_md5`), read back once each, for comparing with
    the storage's checksum; None where the file no longer holds the bytes sent."""

    def __init__(self) -> None:
        self._paths: dict[int, str] = {}
        self._md5s: dict[int, str | None] = {}

    def know(self, item_id: int, path: str) -> None:
        self._paths[item_id] = path

    def forget(self, item_id: int) -> None:
        """The item has its record: its file's MD5 is not needed again."""
        self._paths.pop(item_id, None)
        self._md5s.pop(item_id, None)

    def of(self, up: Upload) -> Upload:
        """`up` with its file's MD5 where it was read."""
        md5 = self._md5s.get(up.item_id)
        return up if md5 is None or up.md5 == md5 else replace(up, md5=md5)

    async def all_known(self, uploads: list[Upload]) -> bool:
        """Read the MD5s of `uploads` not read yet; whether every one is known (only
        then can the storage's checksum decide for them)."""
        for up in uploads:
            path = self._paths.get(up.item_id)
            if up.item_id not in self._md5s and path and up.sha256:
                self._md5s[up.item_id] = await asyncio.to_thread(
                    file_md5, Path(path), up.sha256, up.size)
        return all(self._md5s.get(u.item_id) for u in uploads)


class Verifier:
    """Reads records' checksums or bytes, `concurrency` at a time, into `Digest`s.

    `bytes_read`, `downloads` and `checksums` (records settled by the storage's ETag)
    count what verification cost.
    """

    def __init__(self, session: aiohttp.ClientSession, concurrency: int,
                 *, read_timeout_s: float = 120.0, base_url: str | None = None) -> None:
        self._session = session
        self._base_url = base_url  # api.base_url: http:// downloads only for the sandbox
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10,
                                              sock_read=read_timeout_s)
        self.downloads = 0
        self.checksums = 0
        self.bytes_read = 0

    async def digest(self, url: str, limit: int, *, checksum: bool = False) -> Digest:
        """What the object at `url` is: with `checksum`, its size and MD5 from a 1-byte
        ranged GET where the storage answers them; else (or when it does not) its size,
        sha256 and MD5 from a download. Reading stops past `limit` bytes (the digest then
        has size `limit + 1` and matches no file). The caller holds one of the download
        slots (`digest_records` does)."""
        if not url:
            raise VerifyFailed("the record's presign_url answer has no url")
        problem = cleartext_problem(url, "the record's download URL", self._base_url)
        if problem:  # a patient's file would cross the network in clear text
            raise VerifyFailed(problem)
        # As given: a presigned URL is signed over its exact encoding.
        target = URL(url, encoded=True)
        try:
            if checksum:
                found = await self._ranged(target, limit)
                if found is not None:
                    return found
            return await self._get(target, limit, {})
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise VerifyFailed(f"the download of the record's bytes failed "
                               f"({type(exc).__name__})") from None

    async def _ranged(self, target: URL, limit: int) -> Digest | None:
        """The storage's size and MD5 from `Range: bytes=0-0`; a 200 is the whole body,
        read as a download; None: only a download can tell."""
        headers = {"Range": "bytes=0-0"}
        async with self._session.get(target, headers=headers, timeout=self._timeout,
                                     allow_redirects=False,
                                     **for_session(self._session).for_url(target)) as resp:
            if resp.status == 200:  # the Range was ignored: this is the whole object
                return await self._read(resp, limit)
            if resp.status == 416:  # nothing to range over (an empty object): download
                return None
            if resp.status != 206:
                raise VerifyFailed(f"the storage answered {resp.status} to the checksum "
                                   "request for the record's bytes")
            md5 = plain_md5(resp.headers.get("ETag"))
            size = total_size(resp.headers.get("Content-Range"))
            got = 0
            async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                got += len(chunk)
                self.bytes_read += len(chunk)
                if got > 1:  # more than the byte asked for: not a range answer
                    return None
        if md5 is None or size is None:
            return None
        self.checksums += 1
        return Digest(size, None, md5)

    async def _get(self, target: URL, limit: int, headers: dict[str, str]) -> Digest:
        async with self._session.get(target, headers=headers, timeout=self._timeout,
                                     allow_redirects=False,
                                     **for_session(self._session).for_url(target)) as resp:
            if resp.status != 200:
                raise VerifyFailed(f"the storage answered {resp.status} to the "
                                   "download of the record's bytes")
            return await self._read(resp, limit)

    async def _read(self, resp: aiohttp.ClientResponse, limit: int) -> Digest:
        """The whole body, hashed as it streams; cut past `limit`."""
        self.downloads += 1
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        size = 0
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            size += len(chunk)
            self.bytes_read += len(chunk)
            if size > limit:
                return Digest(limit + 1, "")
            sha.update(chunk)
            md5.update(chunk)
        return Digest(size, sha.hexdigest(), md5.hexdigest())

    async def digest_bounded(self, url: str, limit: int, *, checksum: bool = False
                             ) -> Digest:
        """`digest`, waiting for one of the download slots first."""
        async with self._slots:
            return await self.digest(url, limit, checksum=checksum)

    async def digest_records(
        self,
        record_ids: list[str],
        answers: dict[str, PresignAnswer],
        read_answer: Callable[[str], Awaitable[PresignAnswer]],
        limit: int,
        digests: dict[str, Digest],
        on_error: Callable[[str, str], None],
        checksum: Set[str] = frozenset(),
    ) -> None:
        """Each record's digest into `digests` (by its checksum where its id is in
        `checksum`, else downloaded); its `presign_url` is read again (`read_answer`, an
        API call) when the one known is missing or not fresh. A record that cannot be
        read now is passed to `on_error` and left out."""

        async def one(rid: str) -> None:
            try:
                answer = answers.get(rid)
                if answer is None or not answer.url or \
                        time.monotonic() - answer.read_at > URL_FRESH_S:
                    answer = await read_answer(rid)
                    answers[rid] = answer
                digests[rid] = await self.digest(answer.url, limit,
                                                 checksum=rid in checksum)
            except (VerifyFailed, Permanent, Retryable) as exc:
                answers.pop(rid, None)  # an expired URL: read a fresh one next time
                on_error(rid, str(exc))
            finally:
                self._slots.release()

        async with asyncio.TaskGroup() as tg:
            for rid in record_ids:
                await self._slots.acquire()  # the slot before the task starts
                tg.create_task(one(rid))
