"""The one retry policy, decided in pure code."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from pracsuite_ingest.api import classify_api_answer, find_records, next_link
from pracsuite_ingest.errors import (
    CredentialsRefused,
    OutcomeUnknown,
    Permanent,
    PolicyExpired,
    Retryable,
    Throttled,
)
from pracsuite_ingest.retry import backoff_s, decide_retry, retry_after_s
from pracsuite_ingest.upload import classify_s3_answer, parse_s3_error

RNG = random.Random(7)


def test_retryable_errors_retry_with_backoff_until_the_attempt_cap() -> None:
    d = decide_retry(Retryable("x"), 1, 3, RNG)
    assert d.retry and 0 <= d.delay_s <= 0.5
    assert not decide_retry(Retryable("x"), 3, 3, RNG).retry


def test_server_given_wait_wins_over_backoff() -> None:
    assert decide_retry(Throttled("x", retry_after=7), 1, 5, RNG).delay_s == 7


@pytest.mark.parametrize("error", [Permanent("x"), OutcomeUnknown("x"), PolicyExpired("x"),
                                   ValueError("x")])
def test_never_retried_here(error: Exception) -> None:
    assert not decide_retry(error, 1, 5, RNG).retry


def test_backoff_is_full_jitter_under_a_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_s(10, rng) for _ in range(200)]
    assert max(delays) <= 60 and min(delays) >= 0 and len(set(delays)) > 100


def test_retry_after_seconds_date_and_ratelimit_reset() -> None:
    now = 1_800_000_000.0
    assert retry_after_s({"Retry-After": "3"}, now) == 3
    date = format_datetime(datetime.fromtimestamp(now + 12, UTC), usegmt=True)
    assert retry_after_s({"Retry-After": date}, now) == pytest.approx(12, abs=1)
    assert retry_after_s({"X-RateLimit-Reset": str(int(now + 5))}, now) == 5
    assert retry_after_s({}, now) is None


def test_api_answers_are_classified_by_what_the_caller_does() -> None:
    body = (b'{"error": {"status": 404, "code": "NOT_FOUND", "detail": "no client"},'
            b' "request_id": "r-1"}')
    err = classify_api_answer(404, body, {}, 0)
    assert isinstance(err, Permanent) and "NOT_FOUND" in str(err) and "r-1" in str(err)
    assert isinstance(classify_api_answer(401, b"{}", {}, 0), CredentialsRefused)
    assert isinstance(classify_api_answer(500, b"{}", {}, 0), Retryable)
    gw = classify_api_answer(429, b'{"message": "Too Many Requests"}', {"Retry-After": "2"}, 0)
    assert isinstance(gw, Throttled) and gw.retry_after == 2
    assert classify_api_answer(200, b"{}", {}, 0) is None


def test_s3_answers_are_classified() -> None:
    body = (b"<Error><Code>AccessDenied</Code>"
            b"<Message>Invalid according to Policy: Policy expired.</Message></Error>")
    code, msg = parse_s3_error(body)
    assert isinstance(classify_s3_answer(403, code, msg), PolicyExpired)
    assert isinstance(classify_s3_answer(403, "AccessDenied", "Extra input fields"), Permanent)
    assert isinstance(classify_s3_answer(503, "SlowDown", ""), Throttled)
    assert isinstance(classify_s3_answer(400, "EntityTooLarge", ""), Permanent)
    assert classify_s3_answer(204, "", "") is None
    assert parse_s3_error(b"not xml") == ("", "")


@pytest.mark.parametrize("body", [
    [{"id": 1}],
    {"patient_attachments": [{"id": 1}], "total_entries": 1, "links": {}},
    {"weird_name": [{"id": 1}], "links": {"self": "x"}},
])
def test_list_envelope_variants_are_detected(body: object) -> None:
    assert find_records(body, "") == [{"id": 1}]


def test_list_key_names_the_envelope_and_next_link_is_followed() -> None:
    body = {"a": [{"id": 1}], "b": [{"id": 2}], "links": {"next": "http://n"}}
    assert find_records(body, "b") == [{"id": 2}]
    with pytest.raises(Permanent, match=r"api\.list_key"):
        find_records(body, "")
    assert next_link(body) == "http://n"
    assert next_link({"links": {"self": "x"}}) is None


def test_upload_timeout_grows_with_size_under_a_cap() -> None:
    from pracsuite_ingest.upload import upload_timeout

    small, big = upload_timeout(16_000, 900).total, upload_timeout(100 * 2**20, 900).total
    assert small is not None and big is not None
    assert 60 <= small < 61 and big == 900
    assert upload_timeout(100 * 2**20, 5000).total == 60 + 100 * 2**20 / 65536


def test_upload_timeout_under_a_slow_bandwidth_cap_never_cuts_an_upload_at_its_share() -> None:
    from pracsuite_ingest.upload import upload_timeout

    share = 200_000 / 8  # 200 KB/s for 8 uploads: 25 KB/s each, below the stall speed
    size = 100 * 2**20
    assert upload_timeout(size, 900, share).total > size / share  # and not cut at 900 s
    assert upload_timeout(size, 900, 10**9).total == upload_timeout(size, 900).total
