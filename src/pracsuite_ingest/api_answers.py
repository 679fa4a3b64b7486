"""What PracSuite's answers mean (pure): its error bodies translated into the errors of
`errors.py` (what the caller does about them), a list answer's records and next page,
a presign answer's fields. The client that makes the calls is `api.py`."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from pracsuite_ingest.errors import (
    CredentialsRefused,
    Permanent,
    Retryable,
    Throttled,
    describe_api_error,
)
from pracsuite_ingest.quota import quota_spent
from pracsuite_ingest.retry import MAX_WAIT_S, server_wait

LIST_KEYS = ("patient_attachments", "attachment_clients", "attachments", "items", "data", "results")


def transport_text(exc: BaseException) -> str:
    """What a failed call means, by how it failed: an answer whose body could not be
    decoded (cut short, broken or bomb-like compression) is not an unreachable host."""
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ClientPayloadError):
        return (f"PracSuite answered, but its body could not be read: cut short, or its "
                f"compression broken ({name})")
    return f"PracSuite unreachable ({name})"


def parse_api_error(status: int, body: bytes) -> tuple[str, str, str]:
    """(code, detail, request_id) from PracSuite's error body, tolerating anything."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return "", "", ""
    if not isinstance(data, dict):
        return "", "", ""
    err = data.get("error")
    request_id = str(data.get("request_id") or "")
    if isinstance(err, dict):
        detail = str(err.get("detail") or err.get("title") or "")
        return str(err.get("code") or ""), detail, request_id
    if "message" in data:  # API Gateway's bare answer, e.g. {"message": "Too Many Requests"}
        return "", str(data["message"]), request_id
    return "", "", request_id


def refused_key_hint(detail: str) -> str:
    """Which setting the operator should check, from what PracSuite said."""
    low = detail.lower()
    if "a-api-key" in low or "practice" in low:
        return ("check api.practice_api_key (the clinic's a-api-key: revoked, or lacking "
                "permission?)")
    if "x-api-key" in low or "vendor" in low:
        return "check api.vendor_api_key (the vendor x-api-key issued by PracSuite)"
    return ("check api.vendor_api_key (x-api-key) and api.practice_api_key (a-api-key; "
            "the clinic may have revoked it in Settings > Integrations > API)")


def missing_token_text(method: str, path: str, accepted_before: bool, detail: str = "") -> str:
    """What a 403 MISSING_AUTHENTICATION_TOKEN on `method path` means for the operator.

    API Gateway answers a path it does not have exactly as a missing key. After other
    calls of this run were accepted with the same keys, the keys were sent and were
    good: the practice key was revoked meanwhile, or PracSuite has no such path.
    `path` is the URL's path only (no query, no host): it never holds a secret.
    """
    if accepted_before:
        return (f"{method} {path} was refused after earlier calls of this run were accepted "
                "with the same keys: either the clinic revoked the practice key meanwhile "
                "(api.practice_api_key, the a-api-key it manages in Settings > Integrations "
                "> API), or "
                "PracSuite has no such path (report it: the worker calls documented paths "
                "only)")
    return (f"{method} {path}: a key is missing or refused, or PracSuite has no such path; "
            f"{refused_key_hint(detail)}")


def classify_api_answer(status: int, body: bytes, headers: Any, now: float,
                        max_wait_s: float = MAX_WAIT_S, *, method: str = "GET",
                        path: str = "", accepted_before: bool = False) -> Exception | None:
    """None for a 2xx, else the error that says what the caller should do.

    A spent quota (429 `Limit Exceeded`), or a wait asked (`Retry-After`,
    `X-RateLimit-Reset`) beyond `max_wait_s`, is `QuotaSpent` (`quota.py`): the run
    stops. A wait that is no wait at all means the ordinary backoff, said in the
    message with what was asked. `path` (the URL's path, never its
    query) and `accepted_before` (an earlier call of this client was accepted) let a
    403 MISSING_AUTHENTICATION_TOKEN say which call failed and what it can mean.
    """
    if 200 <= status < 300:
        return None
    code, detail, request_id = parse_api_error(status, body)
    text = describe_api_error(status, code, detail, request_id)
    if status == 429 or status >= 500:
        wait = server_wait(headers, now, max_wait_s)
        spent = quota_spent(status, detail, wait, text, now, max_wait_s)
        if spent is not None:  # no retry will be answered for a long while: stop
            return spent
        note = wait.note(max_wait_s)
        text = f"{text}; {note}" if note else text
        kind = Throttled if status == 429 else Retryable
        return kind(text, retry_after=wait.seconds)
    if status == 403 and code == "MISSING_AUTHENTICATION_TOKEN" and path:
        hint = missing_token_text(method, path, accepted_before, detail)
        return CredentialsRefused(f"{text}: {hint} (and api.base_url)")
    if status == 401 or code in ("UNAUTHORIZED", "MISSING_AUTHENTICATION_TOKEN"):
        return CredentialsRefused(f"{text}: {refused_key_hint(detail)} (and api.base_url)")
    if status == 404:
        return Permanent(f"{text}: PracSuite does not know this client_id")
    return Permanent(text)


def find_records(body: Any, list_key: str) -> list[dict[str, Any]]:
    """The records array of a list answer: a bare array, `list_key`, or the one array."""
    if isinstance(body, list):
        return [r for r in body if isinstance(r, dict)]
    if not isinstance(body, dict):
        raise Permanent("the attachment list answer is neither an object nor an array")
    if list_key:
        value = body.get(list_key)
        if not isinstance(value, list):
            raise Permanent(f"the attachment list has no array under api.list_key '{list_key}'")
        return [r for r in value if isinstance(r, dict)]
    arrays = [k for k, v in body.items() if isinstance(v, list) and k != "links"]
    if len(arrays) == 1:
        return [r for r in body[arrays[0]] if isinstance(r, dict)]
    for key in LIST_KEYS:
        if isinstance(body.get(key), list):
            return [r for r in body[key] if isinstance(r, dict)]
    if not arrays and body.get("total_entries") == 0:
        return []
    raise Permanent("cannot tell which key holds the attachment list; set api.list_key")


def presigned_fields(fields: dict[Any, Any]) -> tuple[tuple[str, str], ...]:
    """The presign answer's form fields, in order; every value must be text and `key` set."""
    out = []
    for name, value in fields.items():
        if not isinstance(value, str):
            raise Retryable(f"PracSuite's presign answer is malformed: field '{name}' is "
                            f"{type(value).__name__}, not text")
        out.append((str(name), value))
    if not any(name == "key" and value for name, value in out):
        raise Retryable("PracSuite's presign answer has no 'key' field")
    return tuple(out)


def key_name_problem(key: str, file_name: str) -> str | None:
    """Why a presigned `key` cannot carry this file (its last segment must be the
    requested `file_name`: PracSuite's validation demands it), or None. The message
    names neither (file names stay out of logs; the report has them)."""
    if key.rpartition("/")[2] == file_name:
        return None
    return ("PracSuite's presigned key does not end in the requested file name "
            "(PracSuite's validation would refuse the upload); nothing was sent")


def next_link(body: Any) -> str | None:
    if isinstance(body, dict):
        links = body.get("links")
        if isinstance(links, dict):
            nxt = links.get("next")
            if isinstance(nxt, str) and nxt:
                return nxt
    return None
