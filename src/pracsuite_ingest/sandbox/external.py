"""The sandbox against an external S3 (a real radosgw): presign for it, validate from it.

In this mode the sandbox serves only its PracSuite API; presigned POSTs point at the
external bucket and are signed with the credentials given (STS session ones carry
their token). An external S3 does not tell the sandbox what it stored, so
`StoreWatcher` polls each presigned key with a signed HEAD until the object shows up
(soon after the presign, then less often as it ages), and then hands it to the
`Validator` as the sandbox's own S3 would: validation waits its delay and creates the
record. It takes the size the watcher's HEAD saw (`SeenSizes`) rather than asking
again: every HEAD costs the S3 server CPU that the worker under test then lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from .sigv4 import ALGORITHM, SERVICE, TERMINATOR, Credentials, presign_post, signing_key

_log = logging.getLogger(__name__)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
FIRST_CHECK_S = 0.06  # a small upload is stored by then (loopback); a miss costs a HEAD
MAX_CHECK_INTERVAL_S = 2.0
CHECK_BACKOFF = 0.25  # the next check comes after this fraction of the presign's age
WATCH_GRACE_S = 900.0  # an upload started just before expiry may finish this much later
HEAD_CONCURRENCY = 16


@dataclass(frozen=True)
class ExternalS3:
    """Where presigned POSTs go in external mode, and the keys that sign them.

    `url` is the endpoint root (`http://127.0.0.1:7480`); POSTs go to `<url>/<bucket>`
    (path-style, as boto3 against a custom endpoint answers).
    """

    url: str
    bucket: str
    region: str
    credentials: Credentials

    @property
    def bucket_url(self) -> str:
        return f"{self.url.rstrip('/')}/{self.bucket}"


def object_path(bucket: str, key: str) -> str:
    """The URI path of an object, encoded as SigV4 wants it for S3 (slashes kept)."""
    return "/" + quote(bucket, safe="") + "/" + quote(key, safe="/~")


@dataclass(frozen=True)
class _Signing:
    """What a SigV4 signature of one request to an object needs: where, when, who."""

    origin: str  # scheme://host
    host: str
    path: str  # encoded, with any path prefix of the S3 URL
    amz_date: str
    scope: str
    creds: Credentials
    key_bytes: bytes

    @classmethod
    def of(cls, s3: ExternalS3, key: str, now: datetime) -> _Signing:
        parts = urlsplit(s3.url)
        date_stamp = now.strftime("%Y%m%d")
        creds = s3.credentials
        return cls(
            origin=f"{parts.scheme}://{parts.netloc}", host=parts.netloc,
            path=(parts.path.rstrip("/") if parts.path else "") + object_path(s3.bucket, key),
            amz_date=now.strftime("%Y%m%dT%H%M%SZ"),
            scope=f"{date_stamp}/{s3.region}/{SERVICE}/{TERMINATOR}", creds=creds,
            key_bytes=signing_key(creds.secret_key, date_stamp, s3.region))

    def signature(self, canonical: str) -> str:
        to_sign = "\n".join([ALGORITHM, self.amz_date, self.scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        return hmac.new(self.key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()


def sign_head(s3: ExternalS3, key: str, now: datetime) -> tuple[str, dict[str, str]]:
    """A SigV4-signed HEAD of `key`: (URL with the path already encoded, headers). Pure."""
    sig = _Signing.of(s3, key, now)
    headers = {"host": sig.host, "x-amz-content-sha256": EMPTY_SHA256,
               "x-amz-date": sig.amz_date}
    if sig.creds.session_token is not None:
        headers["x-amz-security-token"] = sig.creds.session_token
    names = sorted(headers)
    canonical = "\n".join([
        "HEAD", sig.path, "",
        *(f"{n}:{headers[n].strip()}" for n in names), "",
        ";".join(names), EMPTY_SHA256,
    ])
    headers["authorization"] = (
        f"{ALGORITHM} Credential={sig.creds.access_key}/{sig.scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={sig.signature(canonical)}")
    del headers["host"]  # aiohttp sends it from the URL, the same value
    return f"{sig.origin}{sig.path}", headers


def presign_get(s3: ExternalS3, key: str, now: datetime, expires_in_s: int = 3600) -> str:
    """A SigV4 query-presigned GET of `key` (what PracSuite's presign_url answers). Pure.

    The URL is already encoded: send it as it is (yarl `encoded=True`).
    """
    sig = _Signing.of(s3, key, now)
    params = {"X-Amz-Algorithm": ALGORITHM,
              "X-Amz-Credential": f"{sig.creds.access_key}/{sig.scope}",
              "X-Amz-Date": sig.amz_date, "X-Amz-Expires": str(expires_in_s),
              "X-Amz-SignedHeaders": "host"}
    if sig.creds.session_token is not None:
        params["X-Amz-Security-Token"] = sig.creds.session_token
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                     for k, v in sorted(params.items()))
    canonical = "\n".join(["GET", sig.path, query, f"host:{sig.host}", "", "host",
                           "UNSIGNED-PAYLOAD"])
    return f"{sig.origin}{sig.path}?{query}&X-Amz-Signature={sig.signature(canonical)}"


async def put_object(s3: ExternalS3, session: aiohttp.ClientSession, key: str,
                     data: bytes) -> None:
    """Store `data` at `key` on the external S3 through a presigned POST (someone
    else's upload, `SandboxOptions.others_rate`)."""
    url, fields = presign_post(url=s3.bucket_url, bucket=s3.bucket, key=key,
                               creds=s3.credentials, region=s3.region,
                               now=datetime.now(UTC), expires_in_s=300, max_bytes=len(data))
    form = aiohttp.FormData(quote_fields=False)
    for name, value in fields:
        form.add_field(name, value)
    form.add_field("file", data, filename=key.rsplit("/", 1)[-1],
                   content_type="application/octet-stream")
    async with session.post(url, data=form) as resp:
        if resp.status not in (200, 201, 204):
            raise HeadError(f"POST {key} answered {resp.status}")


class HeadError(Exception):
    """The external S3 answered a HEAD with neither 200 nor 404."""


class HeadLookup:
    """`ObjectLookup` over a signed HEAD on the external S3."""

    def __init__(self, s3: ExternalS3, session: aiohttp.ClientSession) -> None:
        self._s3 = s3
        self._session = session
        self._slots = asyncio.Semaphore(HEAD_CONCURRENCY)

    async def size_of(self, bucket: str, key: str) -> int | None:
        if bucket != self._s3.bucket:
            return None
        url, headers = sign_head(self._s3, key, datetime.now(UTC))
        async with self._slots, self._session.head(URL(url, encoded=True),
                                                   headers=headers) as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise HeadError(f"HEAD {key} answered {resp.status}")
            return int(resp.headers.get("Content-Length", "0"))


class SeenSizes:
    """`ObjectLookup` that answers once from what the watcher saw, else by HEAD."""

    def __init__(self, head: HeadLookup) -> None:
        self.head = head
        self._seen: dict[tuple[str, str], int] = {}

    def saw(self, bucket: str, key: str, size: int) -> None:
        self._seen[(bucket, key)] = size

    async def size_of(self, bucket: str, key: str) -> int | None:
        size = self._seen.pop((bucket, key), None)
        return size if size is not None else await self.head.size_of(bucket, key)


def next_check(age_s: float) -> float:
    """Seconds until a presigned key is looked at again, given its age (pure)."""
    return min(MAX_CHECK_INTERVAL_S, max(FIRST_CHECK_S, age_s * CHECK_BACKOFF))


class StoreWatcher:
    """Polls presigned keys on the external S3 until each object appears or expires.

    `watch(key)` is called for each presign; `on_stored(bucket, key, size)` (the
    Validator's `object_stored`) once per key found. One task does the polling;
    `aclose` cancels it. HEAD failures other than 404 are kept in `errors`.
    """

    def __init__(self, s3: ExternalS3, lookup: HeadLookup, *, lifetime_s: float,
                 on_stored: Callable[[str, str, int], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._s3 = s3
        self._lookup = lookup
        self._lifetime_s = lifetime_s
        self._on_stored = on_stored
        self._clock = clock
        self._due: list[tuple[float, float, str]] = []  # (due, presigned at, key)
        self._checking = 0  # keys taken off `_due` whose HEAD is in flight
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.found = 0
        self.heads = 0  # HEADs sent: the S3 server's CPU this stand-in spends
        self.errors: list[str] = []

    @property
    def watching(self) -> int:
        """Keys still looked for: those waiting for their next HEAD and those in one."""
        return len(self._due) + self._checking

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="external S3 watcher")

    def watch(self, key: str) -> None:
        now = self._clock()
        heapq.heappush(self._due, (now + FIRST_CHECK_S, now, key))
        self._wake.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            now = self._clock()
            batch = []
            while self._due and self._due[0][0] <= now:
                batch.append(heapq.heappop(self._due))
            if batch:
                # Each key counts as `_checking` until its check has found it or put it
                # back, so that `watching` never dips while its HEAD is on the wire.
                self._checking += len(batch)
                await asyncio.gather(*(self._check(presigned_at, key)
                                       for _, presigned_at, key in batch))
                continue
            self._wake.clear()
            wait = self._due[0][0] - now if self._due else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _check(self, presigned_at: float, key: str) -> None:
        self.heads += 1
        try:
            size = await self._lookup.size_of(self._s3.bucket, key)
        except (HeadError, aiohttp.ClientError, TimeoutError) as exc:
            if len(self.errors) < 100:
                self.errors.append(f"{key}: {exc!r}")
            _log.warning("external S3 HEAD failed: %s", exc)
            size = None
        now = self._clock()
        self._checking -= 1
        if size is not None:
            self.found += 1
            self._on_stored(self._s3.bucket, key, size)
            return
        age = now - presigned_at
        if age < self._lifetime_s + WATCH_GRACE_S:
            heapq.heappush(self._due, (now + next_check(age), presigned_at, key))
