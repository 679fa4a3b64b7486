"""Every API request the sandbox answered, as sent and as answered, for contract checks.

The test suite checks each recorded request against the published surface
(`pracsuite_ingest/contract/pracsuite-openapi.yaml`): a worker request on a path
PracSuite does not document fails the test that made it. Key values are never kept:
the key headers are recorded as present or not.
"""

from __future__ import annotations

from dataclasses import dataclass

KEY_HEADERS = frozenset({"x-api-key", "a-api-key"})
KEPT_HEADERS = frozenset({"user-agent", "content-type", "accept", *KEY_HEADERS})


@dataclass(frozen=True, slots=True)
class RecordedExchange:
    """One `/v1` request and the sandbox's answer to it."""

    method: str
    path: str
    """As sent (percent-encoded), without the query."""
    query: str
    """The raw query string, "" when none."""
    headers: dict[str, str]
    """User-Agent, Content-Type, Accept; each key header as "<set>" when sent."""
    body: bytes
    status: int
    response_headers: dict[str, str]
    response_body: bytes
    at: float = 0.0
    """When the request arrived (`time.monotonic()`): how a run's calls were paced."""

    @property
    def user_agent(self) -> str:
        return self.headers.get("user-agent", "")


def kept_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers worth recording, lower-cased, with key values replaced."""
    out = {}
    for name, value in headers.items():
        low = name.lower()
        if low in KEPT_HEADERS:
            out[low] = "<set>" if low in KEY_HEADERS else value
    return out
