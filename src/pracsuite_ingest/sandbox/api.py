"""The sandbox's PracSuite API under `/v1`, plus the unauthenticated `/_sandbox` admin.

It serves the paths PracSuite documents (pracsuite-api.md) and no others:
`POST`/`GET /patient/{client_id}/patient_attachment`, `GET
/patient/{client_id}/patient_attachment_folder`, `GET /patient_attachment/{id}` and
its `/presign_url` and `/content`. Records carry absolute `links.*` on the API's
origin (unless `record_links` is off).

Every `/v1` request goes through one middleware, in this order: latency; unknown
path or method (403 MISSING_AUTHENTICATION_TOKEN, as API Gateway answers);
`x-api-key` then `a-api-key` (missing: 403 MISSING_AUTHENTICATION_TOKEN, wrong: 401
UNAUTHORIZED, naming the header); injected 429 / 500; then the handler. Every
answer carries `x-request-id`; error bodies also carry it as `request_id`.
Decisions live in `ledger`; handlers only parse, call and render.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .faults import ApiFault, Faults, ThrottleStyle, throttle_headers
from .ledger import (
    Ledger,
    Record,
    file_name_problem,
    parse_paging,
    parse_sort_by,
    render_record,
    sorted_rendered,
)
from .recorder import RecordedExchange, kept_headers
from .sigv4 import Credentials, presign_post
from .stats import Stats
from .usage import key_label

BARE_LIST = "bare"
_ATTACHMENTS = "/v1/patient/{client_id}/patient_attachment"
_FOLDERS = "/v1/patient/{client_id}/patient_attachment_folder"
_RECORD = "/v1/patient_attachment/{attachment_id}"


@dataclass(frozen=True)
class PresignTarget:
    """The S3 bucket presigned POSTs point at, and the credentials that sign them.

    `url` is the POST URL handed out as is (path-style, like boto3 against a custom
    endpoint); `object_url` is where a stored object can be read back.
    """

    url: str
    object_url: str
    bucket: str
    region: str
    credentials: Credentials
    lifetime_s: float
    max_bytes: int
    get_signer: Callable[[str], str] | None = None
    """A presigned GET for a key (external S3); None: `object_url` serves it as is."""

    def presign(self, key: str, now: datetime) -> tuple[str, list[tuple[str, str]]]:
        return presign_post(
            url=self.url,
            bucket=self.bucket,
            key=key,
            creds=self.credentials,
            region=self.region,
            now=now,
            expires_in_s=self.lifetime_s,
            max_bytes=self.max_bytes,
        )

    def object_location(self, key: str) -> str:
        """Where a record's bytes can be read: a presigned GET on an external S3."""
        if self.get_signer is not None:
            return self.get_signer(key)
        return f"{self.object_url}/{quote(key)}"


@dataclass
class ApiContext:
    """What the API handlers share."""

    vendor_key: str
    practice_key: str
    list_key: str
    target: PresignTarget
    ledger: Ledger
    faults: Faults
    stats: Stats
    admin_stats: Callable[[], dict[str, Any]]
    on_presigned: Callable[[str], None] = lambda key: None
    # more practices on the same vendor key (SandboxOptions.practice_keys); the rate
    # budget is the vendor key's: every practice key draws from it
    practice_keys: tuple[str, ...] = ()
    """Called with each key handed out (external mode watches it on the S3)."""
    error_detail_suffix: str = ""
    """Appended to every error's `detail` (hostile text: escape sequences ...)."""
    presign_key_name: str | None = None
    """When set, every presigned key ends in this name, not the requested one."""
    record_links: bool = True
    """Whether records carry `links` (PracSuite's reference says they do)."""
    on_request: Callable[[RecordedExchange], None] | None = None
    """Called with every `/v1` request and its answer (None: nothing recorded)."""


class ApiError(Exception):
    """An answer in PracSuite's error shape; raised by handlers, rendered by middleware."""

    def __init__(self, status: int, code: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail

    def response(self, request_id: str) -> web.Response:
        body = {
            "error": {
                "status": self.status,
                "code": self.code,
                "title": self.title,
                "detail": self.detail,
            },
            "request_id": request_id,
        }
        return web.json_response(body, status=self.status)


API_CONTEXT = web.AppKey("api_context", ApiContext)
_REQUEST_ID = web.RequestKey("api_request_id", str)
_KEY_HEADERS = (("x-api-key", "vendor API key"), ("a-api-key", "practice API key"))


def build_api_app(context: ApiContext) -> web.Application:
    """The PracSuite stand-in as an aiohttp application."""
    app = web.Application(middlewares=[_middleware])
    app[API_CONTEXT] = context
    router = app.router
    router.add_post(_ATTACHMENTS, _presign, name="presign")
    router.add_get(_ATTACHMENTS, _list, name="list")
    router.add_get(_FOLDERS, _folders, name="folders")
    router.add_get(_RECORD, _record, name="record")
    router.add_get(_RECORD + "/presign_url", _presign_url, name="presign_url")
    router.add_get(_RECORD + "/content", _content, name="content")
    router.add_get("/_sandbox/stats", _admin_stats)
    router.add_post("/_sandbox/reset-faults", _admin_reset_faults)
    return app


def _missing_token(detail: str) -> ApiError:
    return ApiError(403, "MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token", detail)


@web.middleware
async def _middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request_id = str(uuid.uuid4())
    request[_REQUEST_ID] = request_id
    if request.path.startswith("/_sandbox/"):
        response = await handler(request)
        response.headers["x-request-id"] = request_id
        return response
    context = request.app[API_CONTEXT]
    arrived = time.monotonic()
    body = await request.read() if context.on_request is not None else b""
    delay = context.faults.latency_s()
    if delay:
        await asyncio.sleep(delay)
    try:
        response = await _guarded(request, handler, context)
    except ApiError as error:
        error.detail += context.error_detail_suffix
        response = error.response(request_id)
    response.headers["x-request-id"] = request_id
    context.stats.count(request.match_info.route.name or "unknown", response.status)
    if context.on_request is not None:
        answer = response.body if isinstance(response, web.Response) else None
        context.on_request(RecordedExchange(
            method=request.method,
            path=request.rel_url.raw_path,
            query=request.rel_url.raw_query_string,
            headers=kept_headers(dict(request.headers)),
            body=body,
            status=response.status,
            response_headers={k.lower(): v for k, v in response.headers.items()},
            response_body=answer if isinstance(answer, bytes) else b"",
            at=arrived,
        ))
    return response


async def _guarded(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    context: ApiContext,
) -> web.StreamResponse:
    if request.match_info.http_exception is not None:
        raise _missing_token(f"No resource {request.method} {request.path}.")
    given_practice = request.headers.get("a-api-key", "").encode()
    matched = next((i for i, k in enumerate(context.practice_keys)
                    if secrets.compare_digest(given_practice, k.encode())), None)
    practice_key = context.practice_key if matched is None else context.practice_keys[matched]
    for (header, label), expected in zip(
        _KEY_HEADERS, (context.vendor_key, practice_key), strict=True
    ):
        given = request.headers.get(header)
        if not given:
            raise _missing_token(f"The {header} header ({label}) is missing.")
        if not secrets.compare_digest(given.encode(), expected.encode()):
            raise ApiError(
                401,
                "UNAUTHORIZED",
                f"{header} refused",
                f"The {header} header ({label}) is not valid.",
            )
    usage = context.stats.usage
    now = time.monotonic()
    if context.faults.quota_spent():
        context.stats.faults["quota"] += 1
        usage.note(key_label(matched), now, granted=False)
        plan = context.faults.plan
        spent = web.json_response({"message": plan.quota_message}, status=429)
        if plan.quota_retry_after is not None:
            spent.headers["Retry-After"] = plan.quota_retry_after
        return spent
    fault = context.faults.api_fault(now)
    if fault is not None:
        context.stats.faults[fault.value] += 1
    usage.note(key_label(matched), now, granted=fault is not ApiFault.THROTTLED)
    if fault is ApiFault.THROTTLED:
        return _throttled(request, context)
    if fault is ApiFault.SERVER_ERROR:
        raise ApiError(
            500,
            "SERVER_ERROR",
            "Internal server error",
            "Something went wrong. Quote the request_id if you contact support.",
        )
    return await handler(request)


def _throttled(request: web.Request, context: ApiContext) -> web.Response:
    plan = context.faults.plan
    if plan.throttle_style is ThrottleStyle.GATEWAY:
        return web.json_response({"message": "Too Many Requests"}, status=429)
    response = ApiError(
        429, "TOO_MANY_REQUESTS", "Too many requests", "Rate limit exceeded; slow down."
    ).response(request[_REQUEST_ID])
    response.headers.update(
        throttle_headers(plan.throttle_style, plan.retry_after_s, datetime.now(UTC),
                         plan.throttle_value)
    )
    return response


def _client_id(request: web.Request, context: ApiContext) -> str:
    client_id = request.match_info["client_id"]
    if not context.ledger.has_client(client_id):
        raise ApiError(404, "NOT_FOUND", "Patient not found", f"No patient with id {client_id}.")
    return client_id


def _base_url(request: web.Request) -> str:
    return f"{request.url.origin()}/v1"


async def _presign(request: web.Request) -> web.StreamResponse:
    context = request.app[API_CONTEXT]
    client_id = _client_id(request, context)
    try:
        body = await request.json()
    except ValueError:
        body = None
    problem = file_name_problem(body)
    if problem is not None:
        raise ApiError(400, "INVALID_PARAMS", "Invalid file_name", problem)
    now = datetime.now(UTC)
    name = context.presign_key_name or body["file_name"]  # a wrong name: a knob
    pending = context.ledger.presign(client_id, name, now=now)
    url, fields = context.target.presign(pending.key, now)
    context.on_presigned(pending.key)
    context.stats.note_issued(fields)
    return web.json_response({"url": url, "fields": dict(fields)})


async def _list(request: web.Request) -> web.StreamResponse:
    context = request.app[API_CONTEXT]
    client_id = _client_id(request, context)
    paging = parse_paging(request.query)
    if isinstance(paging, str):
        raise ApiError(400, "INVALID_PARAMS", "Invalid paging", paging)
    sort_by = parse_sort_by(request.query.get("sort_by"))
    if isinstance(sort_by, str):
        raise ApiError(400, "INVALID_PARAMS", "Invalid sort_by", sort_by)
    page, size = paging
    records = context.ledger.records_of(client_id)
    start = (page - 1) * size

    def rendered(r: Record, row: int) -> dict[str, Any]:
        return render_record(r, base_url=_base_url(request), row_num=row,
                             total_rows=len(records), links=context.record_links)

    if sort_by:
        everything = sorted_rendered([rendered(r, 0) for r in records], sort_by)
        items = everything[start : start + size]
        for i, item in enumerate(items):
            item["row_num"] = start + i + 1
    else:
        items = [rendered(r, start + i + 1) for i, r in enumerate(records[start : start + size])]
    if context.list_key == BARE_LIST:
        return web.json_response(items)

    def page_url(n: int) -> str:
        return str(request.url.update_query({"page": n, "page_size": size}))

    links = {"self": page_url(page)}
    if start + size < len(records):
        links["next"] = page_url(page + 1)
    if page > 1:
        links["previous"] = page_url(page - 1)
    body = {context.list_key: items, "total_entries": len(records), "links": links}
    return web.json_response(body)


async def _folders(request: web.Request) -> web.StreamResponse:
    """One folder per patient: the reference documents the endpoint, not its contents."""
    context = request.app[API_CONTEXT]
    client_id = _client_id(request, context)
    attachments = f"{_base_url(request)}/patient/{quote(client_id, safe='')}/patient_attachment"
    folder = {"attachment_client_folder_id": 1, "description": "General",
              "links": {"patient_attachments": attachments}}
    return web.json_response({"attachment_client_folders": [folder], "total_entries": 1,
                              "links": {"self": str(request.url)}})


def _found(request: web.Request, context: ApiContext) -> Record:
    record_id = request.match_info["attachment_id"]
    record = context.ledger.record_by_id(record_id)
    if record is None:
        raise ApiError(404, "NOT_FOUND", "Attachment not found", f"No attachment {record_id}.")
    return record


async def _record(request: web.Request) -> web.StreamResponse:
    context = request.app[API_CONTEXT]
    record = _found(request, context)
    body = render_record(record, base_url=_base_url(request), row_num=1, total_rows=1,
                         links=context.record_links)
    return web.json_response(body)


async def _presign_url(request: web.Request) -> web.StreamResponse:
    context = request.app[API_CONTEXT]
    record = _found(request, context)
    expires = datetime.now(UTC) + timedelta(hours=1)
    body = {
        "url": context.target.object_location(record.key),
        "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "file_name": record.file_name,
    }
    return web.json_response(body)


async def _content(request: web.Request) -> web.StreamResponse:
    context = request.app[API_CONTEXT]
    record = _found(request, context)
    return web.Response(
        status=307, headers={"Location": context.target.object_location(record.key)}
    )


async def _admin_stats(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[API_CONTEXT].admin_stats())


async def _admin_reset_faults(request: web.Request) -> web.StreamResponse:
    request.app[API_CONTEXT].faults.reset()
    return web.json_response({"faults": "off"})
