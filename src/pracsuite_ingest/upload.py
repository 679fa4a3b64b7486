"""One file -> one presigned S3 POST, streamed from disk with a known length."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from pracsuite_ingest.bandwidth import BandwidthCap
from pracsuite_ingest.errors import (
    OutcomeUnknown,
    Permanent,
    PolicyExpired,
    Retryable,
    SourceChanged,
    Throttled,
    describe_s3_error,
)
from pracsuite_ingest.formbody import (
    FileChanged,
    content_type_of,
    form_body,
    open_with_first_chunk,
    still_checked,
)
from pracsuite_ingest.guards import SMALL_BODY_LIMIT, BodyTooLarge, read_capped
from pracsuite_ingest.models import LocalFile, Presigned
from pracsuite_ingest.proxy import for_session
from pracsuite_ingest.s3_errors import parse_s3_error

STALL_FLOOR_S = 60.0
MIN_BYTES_PER_S = 64 * 1024  # slower than this, an upload counts as stalled


def upload_timeout(size: int, cap_s: float, share_bytes_per_s: float = 0.0,
                   ) -> aiohttp.ClientTimeout:
    """How long one upload may take: a floor plus the size at a minimal speed, capped.

    A stalled upload is cut at this point and, as its body never fully went out,
    sent again at once (`upload.body_fully_sent`). The answer itself must start
    within two minutes of the body going out. Under a bandwidth cap, an upload's
    `share_bytes_per_s` of it may be slower than the stall speed: half that share is
    the minimal speed then, and `cap_s` (upload.timeout_s) does not apply, so that the
    pace the operator chose never makes an upload look stalled.
    """
    if 0 < share_bytes_per_s < 2 * MIN_BYTES_PER_S:
        total = STALL_FLOOR_S + size / (share_bytes_per_s / 2)
    else:
        total = min(cap_s, STALL_FLOOR_S + size / MIN_BYTES_PER_S)
    return aiohttp.ClientTimeout(total=total, sock_connect=10, sock_read=120)


RETRYABLE_S3_CODES = frozenset(
    {"SlowDown", "InternalError", "RequestTimeout", "ServiceUnavailable"})


def classify_s3_answer(status: int, code: str, message: str) -> Exception | None:
    """None for success, else the error that says what the caller should do."""
    if status in (200, 201, 204):
        return None
    text = describe_s3_error(status, code, message)
    if status == 403 and code == "AccessDenied" and "expired" in message.lower():
        return PolicyExpired(text)
    if code == "SlowDown" or status == 429:
        return Throttled(text)
    if code in RETRYABLE_S3_CODES or status in (500, 502, 503, 504):
        return Retryable(text)
    return Permanent(text)


def policy_expiry(presigned: Presigned) -> datetime | None:
    """The expiration written in the presigned policy, if it can be read."""
    for name, value in presigned.fields:
        if name.lower() == "policy":
            try:
                doc = json.loads(base64.b64decode(value, validate=True))
                return datetime.fromisoformat(str(doc["expiration"]).replace("Z", "+00:00"))
            except (ValueError, KeyError, TypeError):
                return None
    return None


def is_expired(presigned: Presigned, now: datetime) -> bool:
    expiry = policy_expiry(presigned)
    return expiry is not None and expiry <= now


def s3_clock(headers: Any) -> datetime | None:
    """S3's own time, from its answer's `Date` header (None when absent or unreadable)."""
    value = headers.get("Date") if headers is not None else None
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else None


def build_form(presigned: Presigned, file: object, file_name: str) -> aiohttp.FormData:
    """Every field in the order and spelling returned, then the file part last."""
    form = aiohttp.FormData(quote_fields=False)
    for name, value in presigned.fields:
        form.add_field(name, value)
    form.add_field("file", file, filename=file_name, content_type=content_type_of(file_name))
    return form


async def _open_for_upload(path: Path | LocalFile, root: Path | None) -> tuple[BinaryIO, bytes]:
    """The file to send and its first chunk: the checked file kept open with its bytes
    (no second open, no thread hand-off), or the file opened again and compared with
    the check's identity; `SourceChanged` if it is not the file checked."""
    local = path if isinstance(path, LocalFile) else None
    where = local.path if local is not None else path
    assert isinstance(where, Path)
    try:
        if local is not None and local.opened is not None:
            return local.opened.fh, still_checked(local.opened, local)
        # Opened and the first chunk read in one thread hand-off; never blocks on a
        # swapped-in FIFO.
        return await asyncio.to_thread(
            open_with_first_chunk, where,
            identity=local.identity if local is not None else None, root=root)
    except FileChanged:
        raise SourceChanged() from None
    except OSError as exc:
        raise Permanent(f"cannot open the file for upload: {exc.strerror}") from None


async def upload_file(
    session: aiohttp.ClientSession,
    presigned: Presigned,
    path: Path | LocalFile,
    file_name: str,
    *,
    timeout: aiohttp.ClientTimeout | None = None,  # noqa: ASYNC109 - aiohttp's own timeouts
    cap: BandwidthCap | None = None,
    root: Path | None = None,
) -> None:
    """POST `path` to the presigned form; return on 204, raise what the caller acts on.

    Whether the policy has expired is S3's to judge (docs/contract.md): it is sent whatever this
    machine's clock says, and only S3's refusal (`PolicyExpired`: presign again) counts;
    a clock hours ahead or behind changes nothing. The body (`formbody.form_body`) has a
    known size, so the request carries a Content-Length and is never chunked (S3
    answers 411 to a chunked POST); the file is streamed from disk in chunks, never
    read whole into memory.

    Given the checked `LocalFile`, the bytes sent are the bytes checked: the file is
    opened without following a link (inside `root`), its identity compared with the
    check's, and what is streamed hashed; anything different fails the upload before
    the body is complete, so S3 stores nothing (`SourceChanged`).
    """
    local = path if isinstance(path, LocalFile) else None
    kept = local.opened if local is not None else None
    fh, first = await _open_for_upload(path, root)
    try:
        # The same bytes as build_form's, but the fields in one write (FormData makes
        # one per part and line break).
        if local is not None:
            form = form_body(presigned.fields, fh, file_name, size=local.size, first=first,
                             cap=cap, sha256=local.sha256, identity=local.identity)
        else:
            form = form_body(presigned.fields, fh, file_name, first=first, cap=cap)
        # No redirects: the body is a patient's file, and it goes where PracSuite said only.
        async with session.post(presigned.url, data=form, timeout=timeout,
                                allow_redirects=False,
                                **for_session(session).for_url(presigned.url)) as resp:
            code = message = ""
            s3_now = None
            if resp.status not in (200, 201, 204):
                s3_now = s3_clock(resp.headers)  # read only where a refusal needs it
                body = b""
                with contextlib.suppress(BodyTooLarge):  # S3's error document is short
                    body = await read_capped(resp, SMALL_BODY_LIMIT)
                code, message = parse_s3_error(body)
            error = classify_s3_answer(resp.status, code, message)
    except aiohttp.ClientConnectorError as exc:
        # Nothing reached S3: safe to send again.
        raise Retryable(f"cannot connect to S3: {type(exc).__name__}") from None
    except (aiohttp.ClientError, TimeoutError, FileChanged) as exc:
        if form.changed:
            # The body was cut before its end: S3 stored nothing.
            raise SourceChanged() from None
        if not form.handed_on:
            # S3 stores nothing from an incomplete body: a stalled or cut upload is
            # safe to send again at once.
            raise Retryable(f"upload cut before the file was sent ({type(exc).__name__})"
                            ) from None
        # The whole body went out: S3 may have stored it before the answer was lost.
        raise OutcomeUnknown(f"S3 answer lost ({type(exc).__name__})") from None
    finally:
        if kept is None:  # a kept file is its checker's to close (another attempt may follow)
            fh.close()  # a read-only regular file: closing does not block (one hop less)
    if isinstance(error, Permanent) and code == "AccessDenied" and s3_now is not None \
            and is_expired(presigned, s3_now):
        # Some S3s (radosgw) say only "AccessDenied": the policy's expiration against
        # S3's own clock (its Date header, never ours) tells why.
        raise PolicyExpired(str(error))
    if error is not None:
        raise error
