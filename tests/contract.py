"""The API contract check: recorded sandbox exchanges against pracsuite-openapi.yaml.

`request_problems` is what the suite-wide fixture in conftest.py runs on every sandbox
a test started: each request the *worker* sent (its User-Agent is
`pracsuite-ingest/...`) must be a documented operation with documented parameters and
body. `answer_problems` checks the sandbox's side: every answer matches the
operation's documented responses.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from pracsuite_ingest.contract import OPENAPI_PATH
from pracsuite_ingest.sandbox.recorder import RecordedExchange

WORKER_AGENT = "pracsuite-ingest/"
# The spec names production; a recorded exchange is checked as if sent there.
PRODUCTION = "https://api.pracsuite.com"
KEYS = {"x-api-key": "<set>", "a-api-key": "<set>"}


@functools.cache
def spec() -> OpenAPI:
    return OpenAPI.from_file_path(str(OPENAPI_PATH))


def as_request(ex: RecordedExchange) -> MockRequest:
    return MockRequest(
        PRODUCTION, ex.method.lower(), unquote(ex.path),
        args=dict(parse_qsl(ex.query, keep_blank_values=True)),
        headers=dict(ex.headers), data=ex.body or None,
        content_type=ex.headers.get("content-type", "application/json").split(";")[0])


def as_response(ex: RecordedExchange) -> MockResponse:
    content_type = ex.response_headers.get("content-type", "application/json")
    return MockResponse(ex.response_body, status_code=ex.status,
                        headers=dict(ex.response_headers),
                        content_type=content_type.split(";")[0])


def describe(ex: RecordedExchange) -> str:
    return f"{ex.method} {ex.path}{'?' + ex.query if ex.query else ''} -> {ex.status}"


NOT_FOUND = {"ServerNotFound": "no documented path", "PathNotFound": "no documented path",
             "OperationNotFound": "no documented operation for this method"}


def _first_line(exc: Exception) -> str:
    if type(exc).__name__ in NOT_FOUND:
        return NOT_FOUND[type(exc).__name__]
    cause = exc.__cause__ or exc.__context__
    text = f"{type(exc).__name__}: {exc}"
    if cause is not None:
        text += f" ({type(cause).__name__}: {cause})"
    return text.splitlines()[0][:300]


def request_problems(exchanges: Iterable[RecordedExchange], *,
                     worker_only: bool = True) -> list[str]:
    """One line per request that matches no documented operation (or breaks its schema)."""
    out = []
    for ex in exchanges:
        if worker_only and not ex.user_agent.startswith(WORKER_AGENT):
            continue
        try:
            spec().validate_request(as_request(ex))
        except Exception as exc:  # openapi-core raises one of many validation errors
            out.append(f"{describe(ex)}: {_first_line(exc)}")
    return out


def answer_problems(exchanges: Iterable[RecordedExchange]) -> list[str]:
    """One line per answer that the documented operation does not allow."""
    out = []
    for ex in exchanges:
        try:
            spec().validate_response(as_request(ex), as_response(ex))
        except Exception as exc:
            out.append(f"{describe(ex)}: {_first_line(exc)}")
    return out
