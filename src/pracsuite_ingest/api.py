"""The PracSuite client: presign, list attachments (paged), record look-ups, errors.

Every call goes through one process-wide rate limiter (`requests_per_second`) and
carries both keys. PracSuite's error body is translated at this boundary into the
errors of `errors.py`; key values never reach a message.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import aiohttp

from pracsuite_ingest import __version__
from pracsuite_ingest.api_answers import (
    classify_api_answer,
    find_records,
    key_name_problem,
    next_link,
    presigned_fields,
    transport_text,
)
from pracsuite_ingest.client_ids import DOT_SEGMENTS, client_id_problem
from pracsuite_ingest.errors import (
    Permanent,
    Retryable,
    Throttled,
)
from pracsuite_ingest.guards import (
    LIST_BODY_LIMIT,
    SMALL_BODY_LIMIT,
    BodyTooLarge,
    cleartext_problem,
    describe_origin,
    origin,
    read_capped,
    same_origin,
)
from pracsuite_ingest.list_walk import Walk, WalkLimits
from pracsuite_ingest.models import Presigned
from pracsuite_ingest.proxy import for_session
from pracsuite_ingest.rate_gate import RateGate
from pracsuite_ingest.retry import MAX_WAIT_S, server_wait


@dataclass(frozen=True, slots=True)
class PageRef:
    """Where a page of a list is: the URL to GET and its 1-based number."""

    url: str
    page: int
    walk: Walk | None = None  # what this walk has read before this page (list_walk.py)


@dataclass(frozen=True, slots=True)
class RecordRef:
    """One attachment record as the worker reaches it: its id, and the record's own
    `links.presign_url` / `links.content` when it carried them ("" when not)."""

    record_id: str
    presign_link: str = ""
    content_link: str = ""


def record_links(record: Mapping[str, Any]) -> dict[str, str]:
    """The record's `links` that are non-empty strings (`self`, `content`, `presign_url`)."""
    links = record.get("links")
    if not isinstance(links, Mapping):
        return {}
    return {str(k): v for k, v in links.items() if isinstance(v, str) and v}


@dataclass(frozen=True, slots=True)
class Exchange:
    """One GET as `check --client` studies it: nothing is judged, nothing raised."""

    status: int
    headers: dict[str, str]
    body: Any
    """The parsed JSON, or None when the body was empty, not JSON or too large."""
    elapsed_s: float


class PracSuiteClient:
    """Thin I/O over PracSuite's API; every answer is judged by `classify_api_answer`.

    Only paths PracSuite documents (pracsuite-api.md) are called, and links its answers
    give on the API's own origin are followed (`links.next`, a record's `links.*`);
    a link elsewhere is never sent the keys.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        vendor_api_key: str,
        practice_api_key: str,
        gate: RateGate,
        *,
        timeout_s: float,
        list_key: str = "",
        page_size: int = 100,
        max_wait_s: float = MAX_WAIT_S,
        walk_limits: WalkLimits | None = None,
    ) -> None:
        self._session = session
        self._walk_limits = walk_limits or WalkLimits()
        self._max_wait_s = max_wait_s
        self._base = base_url.rstrip("/")
        self._origin = origin(self._base)  # the only place the keys may go
        self._own_prefix = self._base + "/"  # URLs this client builds itself start so
        self._headers = {"x-api-key": vendor_api_key, "a-api-key": practice_api_key,
                         "Accept": "application/json",
                         "User-Agent": f"pracsuite-ingest/{__version__}"}
        self._gate = gate
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 10))
        self._list_key = list_key
        self._page_size = page_size
        self._accepted = False  # some call of this client was answered 2xx

    @property
    def calls(self) -> int:
        """API calls made through this client's gate (shared by the whole process)."""
        return self._gate.calls

    @property
    def gate(self) -> RateGate:
        return self._gate

    def _client_url(self, client_id: str) -> str:
        # pracsuite-api.md: POST and GET /patient/{client_id}/patient_attachment
        problem = client_id_problem(client_id)
        if problem:  # `..` would be resolved away by yarl: another path, with both keys
            raise Permanent(f"{problem}; nothing was sent")
        return f"{self._base}/patient/{quote(client_id, safe='')}/patient_attachment"

    def _record_url(self, record_id: str) -> str:
        # pracsuite-api.md: GET /patient_attachment/{patient_attachment_id}[/presign_url]
        if record_id in DOT_SEGMENTS:  # from an answer: yarl would resolve it away
            raise Permanent(f"PracSuite's answer holds the record id {record_id!r}, which "
                            "as a URL path segment would change the path; not looked up")
        return f"{self._base}/patient_attachment/{quote(record_id, safe='')}"

    def own_link(self, link: str) -> str | None:
        """`link` as an absolute URL when it is on the API's origin, else None."""
        if not link:
            return None
        url = urljoin(self._own_prefix, link)
        # under api.base_url's own prefix: its origin, without parsing it again
        mine = self._origin is not None and url.startswith(self._own_prefix)
        return url if mine or same_origin(url, self._origin) else None

    def _check_destination(self, url: str) -> None:
        if not url.startswith(self._own_prefix) and not same_origin(url, self._origin):
            # e.g. a links.next pointing elsewhere
            raise Permanent(f"refusing to send the API keys to {describe_origin(url)}: it is "
                            f"not api.base_url's host ({describe_origin(self._base)})")

    async def _send(self, method: str, url: str, body: dict[str, str] | None,
                    limit: int, sent: list[float] | None = None,
                    ) -> tuple[int, Any, bytes, str, bool, float]:
        """(status, headers, body, content type, body too large, the gate's rate when it
        was sent) of one call; the keys go to api.base_url's origin only. Transport
        failures are Retryable. `sent`, when given, gains the monotonic time the rate
        gate let the call go (a response time starts there)."""
        self._check_destination(url)
        async with self._gate as sent_at_rate:
            if sent is not None:
                sent.append(time.monotonic())
            try:
                async with self._session.request(
                    method, url, json=body, headers=self._headers, timeout=self._timeout,
                    allow_redirects=False, **for_session(self._session).for_url(url),
                ) as resp:
                    too_large = False
                    try:
                        raw = await read_capped(resp, limit)
                    except BodyTooLarge as exc:
                        raw, too_large = str(exc).encode(), True
                    return (resp.status, resp.headers, raw, resp.content_type, too_large,
                            sent_at_rate)
            except aiohttp.ClientConnectorCertificateError:
                raise Retryable("PracSuite unreachable: its TLS certificate is not trusted "
                                "(ClientConnectorCertificateError); if a proxy inspects TLS, "
                                "set api.ca_file to its CA") from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise Retryable(transport_text(exc)) from None

    async def _request(self, method: str, url: str, body: dict[str, str] | None = None, *,
                       limit: int = SMALL_BODY_LIMIT) -> Any:
        status, headers, raw, content_type, too_large, sent_at_rate = await self._send(
            method, url, body, limit)
        if too_large:
            if 200 <= status < 300:
                raise Permanent(f"PracSuite's answer is too large ({raw.decode()}); not read")
            raw = b""  # an error answer: its status is enough
        error = classify_api_answer(status, raw, headers, time.time(), self._max_wait_s,
                                    method=method, path=urlsplit(url).path,
                                    accepted_before=self._accepted)
        if error is not None:
            if isinstance(error, Throttled):
                self._gate.throttle(error.retry_after, sent_at_rate)
            raise error
        self._accepted = True
        self._gate.succeeded()
        try:
            return json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            raise Retryable(f"PracSuite answered with a body that is not JSON ({content_type}"
                            f", {len(raw):,} bytes)") from None

    async def presign(self, client_id: str, file_name: str) -> Presigned:
        data = await self._request("POST", self._client_url(client_id), {"file_name": file_name})
        if not isinstance(data, dict) or not isinstance(data.get("fields"), dict):
            raise Retryable("PracSuite's presign answer has no 'fields'")
        url = data.get("url")
        if not isinstance(url, str) or not url:
            raise Retryable("PracSuite's presign answer has no 'url'")
        fields = presigned_fields(data["fields"])
        problem = cleartext_problem(url, "the presigned upload URL", self._base)
        if problem:  # the patient's file would cross the network in clear text
            raise Permanent(f"{problem}; not uploaded")
        problem = key_name_problem(dict(fields)["key"], file_name)
        if problem:
            raise Permanent(problem)
        return Presigned(url=url, fields=fields)

    def list_url(self, client_id: str, page: int, page_size: int | None = None,
                 sort_by: list[str] | None = None) -> str:
        """The documented list URL: `page`, `page_size` and `sort_by` (a JSON array)."""
        size = self._page_size if page_size is None else page_size
        url = f"{self._client_url(client_id)}?page={page}&page_size={size}"
        if sort_by:
            url += "&sort_by=" + quote(json.dumps(sort_by, separators=(",", ":")), safe="")
        return url

    def first_page(self, client_id: str) -> PageRef:
        """Where a walk through the client's list starts (its limits start with it)."""
        return PageRef(self.list_url(client_id, 1), 1,
                       Walk(time.monotonic(), self._walk_limits))

    async def list_page(self, client_id: str, ref: PageRef) -> tuple[list[dict[str, Any]],
                                                                     PageRef | None]:
        """One page of the client's attachment list and where the next one is (or None).

        Follows `links.next`; a bare array has no links, so pages go on by number
        until a short page. A `PageRef` from `first_page` bounds the walk: a loop,
        too many pages or records, or too long a time is `Permanent` (list_walk.py).
        """
        body = await self._request("GET", ref.url, limit=LIST_BODY_LIMIT)
        records = find_records(body, self._list_key)
        nxt: str | None
        if isinstance(body, list):
            nxt = (self.list_url(client_id, ref.page + 1)
                   if len(records) >= self._page_size else None)
            total = None
        else:
            # A relative link is PracSuite's own; one elsewhere is refused by _request.
            link = next_link(body)
            nxt = urljoin(ref.url, link) if link else None
            total = body.get("total_entries")
        walk = ref.walk
        if walk is not None:  # a page, a loop, a cap or the time: Permanent (list_walk.py)
            walk = walk.after_page(ref.url, records, total, nxt, time.monotonic())
        return records, PageRef(nxt, ref.page + 1, walk) if nxt else None

    async def list_pages(self, client_id: str) -> AsyncIterator[list[dict[str, Any]]]:
        """Every page of the client's attachment list, in order."""
        ref: PageRef | None = self.first_page(client_id)
        while ref is not None:
            records, ref = await self.list_page(client_id, ref)
            yield records

    def presign_url_of(self, ref: RecordRef) -> str:
        """Where a record's `presign_url` is: its own link on the API's origin, else the
        documented `GET /patient_attachment/{id}/presign_url`."""
        return self.own_link(ref.presign_link) or f"{self._record_url(ref.record_id)}/presign_url"

    async def record_presign(self, ref: RecordRef) -> dict[str, Any]:
        """The record's whole `presign_url` answer: `url` (a short-lived GET of the bytes
        on the storage), `expires`, `file_name`; {} when the answer is not an object."""
        data = await self._request("GET", self.presign_url_of(ref))
        return data if isinstance(data, dict) else {}

    async def record_file_name(self, client_id: str, record_id: str,
                               presign_link: str = "") -> str:
        """The file name PracSuite holds for a record (only `presign_url` tells it).

        `client_id` is not part of the documented path; it stays for the callers.
        """
        data = await self.record_presign(RecordRef(record_id, presign_link))
        return str(data.get("file_name") or "")

    async def exchange(self, url: str) -> Exchange:
        """One read-only GET, answered whatever its status (for `check --client`).

        Transport failures raise Retryable; a link elsewhere raises Permanent.
        """
        sent: list[float] = []  # when the gate let it go: its own wait is not PracSuite's
        status, headers, raw, _, too_large, sent_at_rate = await self._send(
            "GET", url, None, LIST_BODY_LIMIT, sent)
        elapsed = time.monotonic() - sent[0]
        body: Any = None
        if raw and not too_large:
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                body = None
        if 200 <= status < 300:
            self._accepted = True
        elif status == 429:
            wait = server_wait(headers, time.time(), self._max_wait_s)
            self._gate.throttle(wait.seconds, sent_at_rate)
        return Exchange(status, {k.lower(): v for k, v in headers.items()}, body, elapsed)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session (downloads from the storage use it, without the keys)."""
        return self._session

    async def probe(self) -> None:
        """One read-only call that proves both keys work (a 404 for the probe client is fine)."""
        try:
            await self._request("GET", self.list_url("0", 1, 1))
        except Permanent:
            return
