"""The sandbox's S3: presigned POST uploads that enforce the policy, as S3 does.

`POST /{bucket}` reads the form fields in order, checks them with
`sigv4.authorize_post` once the `file` part starts (fields after it are ignored, as
S3 ignores them), streams the file part to a temp file in fixed-size chunks
(memory stays flat for any size), checks its size and only then renames it into
place and answers 204. Refusals are S3's XML errors with S3's statuses.
`GET`/`HEAD /{bucket}/{key}` serve stored objects, with S3's `ETag` (the MD5, quoted)
and `Range` (206) by default; `SandboxOptions.object_etag` and `honour_range` play an
S3 that gives no or a multipart-looking ETag, or ignores the Range. No API key is ever read here.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

from aiohttp import BodyPartReader, web

from .faults import Faults, S3Fault
from .sigv4 import Grant, Refusal, authorize_post, check_size
from .stats import DROPPED, Stats
from .store import LocalStore

CHUNK_BYTES = 256 * 1024
MAX_PRE_FILE_BYTES = 20 * 1024  # S3: the fields before the file may not exceed 20 KB

StoredCallback = Callable[[str, str, int], None]
"""Called with (bucket, key, size) after an object is stored, from the event loop."""


@dataclass
class S3Context:
    """What the S3 handlers share."""

    store: LocalStore
    buckets: frozenset[str]
    secrets_by_access_key: Mapping[str, str]
    session_tokens: Mapping[str, str]
    faults: Faults
    stats: Stats
    on_stored: StoredCallback
    etag: str = "md5"  # SandboxOptions.object_etag
    honour_range: bool = True  # SandboxOptions.honour_range


@dataclass(frozen=True)
class _Stored:
    key: str
    size: int


S3_CONTEXT = web.AppKey("s3_context", S3Context)
_REQUEST_ID = web.RequestKey("s3_request_id", str)
_DROPPED = web.RequestKey("s3_dropped", bool)


def build_s3_app(context: S3Context) -> web.Application:
    """The S3 stand-in as an aiohttp application."""
    app = web.Application(middlewares=[_middleware])
    app[S3_CONTEXT] = context
    app.router.add_post("/{bucket}", _post_object)
    app.router.add_post("/{bucket}/", _post_object)
    app.router.add_get("/{bucket}/{key:.+}", _get_object)
    return app


def error_xml(code: str, message: str, request_id: str) -> str:
    """S3's error document."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{escape(request_id)}</RequestId></Error>"
    )


def _error(request: web.Request, status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=error_xml(code, message, request[_REQUEST_ID]),
        content_type="application/xml",
    )


def _refused(request: web.Request, refusal: Refusal) -> web.Response:
    return _error(request, refusal.status, refusal.code, refusal.message)


@web.middleware
async def _middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    context = request.app[S3_CONTEXT]
    request[_REQUEST_ID] = uuid.uuid4().hex[:16].upper()
    request[_DROPPED] = False
    kind = {"POST": "s3_post", "HEAD": "s3_head"}.get(request.method, "s3_get")
    delay = context.faults.latency_s()
    if delay:
        await asyncio.sleep(delay)
    error = request.match_info.http_exception
    if error is not None:
        await _drain(request)
        code = "MethodNotAllowed" if error.status == 405 else "NoSuchKey"
        response: web.StreamResponse = _error(request, error.status, code, error.reason)
    else:
        response = await handler(request)
    response.headers["x-amz-request-id"] = request[_REQUEST_ID]
    context.stats.count(kind, DROPPED if request[_DROPPED] else response.status)
    return response


async def _drain(request: web.Request) -> None:
    """Read and discard the rest of the body, so the client gets our answer cleanly."""
    while await request.content.readany():
        pass


def _drop(request: web.Request) -> web.Response:
    """Close the connection without answering; aiohttp then discards the response."""
    request[_DROPPED] = True
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=204)


async def _post_object(request: web.Request) -> web.StreamResponse:
    context = request.app[S3_CONTEXT]
    bucket = request.match_info["bucket"]
    if request.content_length is None:
        await _drain(request)
        return _error(
            request, 411, "MissingContentLength", "You must provide the Content-Length HTTP header."
        )
    if bucket not in context.buckets:
        await _drain(request)
        return _error(request, 404, "NoSuchBucket", "The specified bucket does not exist")
    fault = context.faults.s3_fault()
    if fault is not None:
        context.stats.faults[fault.value] += 1
    if fault is S3Fault.SLOWDOWN:
        await _drain(request)
        return _error(request, 503, "SlowDown", "Please reduce your request rate.")
    if fault is S3Fault.DROP_BEFORE:
        await _drain(request)
        return _drop(request)
    if request.content_type != "multipart/form-data":
        await _drain(request)
        return _error(
            request,
            412,
            "PreconditionFailed",
            "Bucket POST must be of the enclosure-type multipart/form-data",
        )
    outcome = await _receive(request, context, bucket)
    if isinstance(outcome, Refusal):
        await _drain(request)
        return _refused(request, outcome)
    context.stats.uploads_stored += 1
    context.on_stored(bucket, outcome.key, outcome.size)
    if fault is S3Fault.DROP_AFTER:
        await _drain(request)
        return _drop(request)
    await _drain(request)  # any parts after the file are ignored, as S3 ignores them
    return web.Response(status=204)


async def _receive(request: web.Request, context: S3Context, bucket: str) -> _Stored | Refusal:
    """Read the form, authorize it, stream the file to disk, size-check, store."""
    reader = await request.multipart()
    fields: dict[str, str] = {}
    pre_file_bytes = 0
    while True:
        part = await reader.next()
        if part is None:
            return Refusal(
                400, "InvalidArgument", "POST requires exactly one file upload per request."
            )
        if not isinstance(part, BodyPartReader):
            return Refusal(400, "MalformedPOSTRequest", "Nested multipart is not supported.")
        name = part.name or ""
        if name.lower() == "file":
            break
        raw = bytearray()
        while chunk := await part.read_chunk(CHUNK_BYTES):
            raw.extend(chunk)
            pre_file_bytes += len(chunk)
            if pre_file_bytes > MAX_PRE_FILE_BYTES:
                return Refusal(
                    400,
                    "MaxPostPreDataLengthExceeded",
                    "Your POST request fields preceding the upload file were too large.",
                )
        try:
            fields[name] = raw.decode()
        except UnicodeDecodeError:
            return Refusal(400, "InvalidArgument", f"Form field {name} is not valid UTF-8.")
    grant = authorize_post(
        fields,
        bucket=bucket,
        secrets_by_access_key=context.secrets_by_access_key,
        now=datetime.now(UTC),
        session_tokens=context.session_tokens,
    )
    if isinstance(grant, Refusal):
        return grant
    key = next(value for name, value in fields.items() if name.lower() == "key")
    if context.store.object_path(bucket, key) is None:
        return Refusal(400, "KeyTooLongError", "Your key is too long or cannot be stored.")
    return await _store_file(part, context.store, grant, bucket, key)


async def _store_file(
    part: BodyPartReader, store: LocalStore, grant: Grant, bucket: str, key: str
) -> _Stored | Refusal:
    with store.receiving() as (handle, temp):
        size = 0
        while chunk := await part.read_chunk(CHUNK_BYTES):
            size += len(chunk)
            # Past the limit keep counting (the answer is EntityTooLarge) but stop writing.
            if grant.max_bytes is None or size <= grant.max_bytes:
                # A blocking write of one chunk to the page cache: cheaper than a thread hop.
                handle.write(chunk)
        handle.close()
        refusal = check_size(grant, size)
        if refusal is not None:
            return refusal
        try:
            store.commit(temp, bucket, key)
        except OSError:
            return Refusal(
                500, "InternalError", "We encountered an internal error. Please try again."
            )
    return _Stored(key, size)


async def _get_object(request: web.Request) -> web.StreamResponse:
    context = request.app[S3_CONTEXT]
    bucket, key = request.match_info["bucket"], request.match_info["key"]
    if bucket not in context.buckets:
        return _error(request, 404, "NoSuchBucket", "The specified bucket does not exist")
    path = context.store.stored_path(bucket, key)
    if path is None or not path.is_file():
        return _error(request, 404, "NoSuchKey", "The specified key does not exist.")
    size = path.stat().st_size
    headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
    md5 = await asyncio.to_thread(_md5_of, path)
    if context.etag == "md5":
        headers["ETag"] = f'"{md5}"'
    elif context.etag == "multipart":
        headers["ETag"] = f'"{md5}-2"'
    wanted = _RANGE.fullmatch(request.headers.get("Range", "").strip())
    if wanted is not None and context.honour_range and request.method != "HEAD":
        first = int(wanted.group(1))
        last = min(int(wanted.group(2) or size - 1), size - 1)
        if first >= size or first > last:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        with path.open("rb") as fh:
            fh.seek(first)
            body = fh.read(last - first + 1)
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        context.stats.s3_bytes_served += len(body)
        return web.Response(status=206, body=body, headers=headers)
    response = web.StreamResponse(status=200, headers=headers)
    response.content_length = size
    await response.prepare(request)
    if request.method == "HEAD":  # the headers only
        await response.write_eof()
        return response
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            context.stats.s3_bytes_served += len(chunk)
            await response.write(chunk)
    await response.write_eof()
    return response


_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def _md5_of(path: Path) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            md5.update(chunk)
    return md5.hexdigest()
