"""Whatever wait a throttling answer asks for, the run goes on: a huge one is cut to
`api.max_wait_s` where the wait is computed (a run facing one stops instead:
test_quota_stop.py); one that is no wait (`²`, `nan`,
`inf`, a negative number) means the ordinary backoff; and a bug that still slips
through ends the run with its report and exit 3, never a bare traceback."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.api import RateGate, classify_api_answer
from pracsuite_ingest.errors import Fatal, Throttled, Unexpected, as_fatal
from pracsuite_ingest.retry import decide_retry, server_wait
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions
from pracsuite_ingest.sandbox.faults import ThrottleStyle

NOW = 1_800_000_000.0


@pytest.mark.parametrize(("headers", "seconds", "capped"), [
    ({"Retry-After": "1000000000"}, 120.0, True),
    ({"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}, 120.0, True),
    ({"X-RateLimit-Reset": "99999999999"}, 120.0, True),
    ({"Retry-After": "7"}, 7.0, False),
    ({"X-RateLimit-Reset": str(int(NOW) + 5)}, 5.0, False),
])
def test_a_long_wait_is_capped_at_max_wait(headers: dict[str, str], seconds: float,
                                           capped: bool) -> None:
    wait = server_wait(headers, NOW, 120.0)
    assert (wait.seconds, wait.capped) == (seconds, capped)
    name, value = next(iter(headers.items()))
    assert f"{name}: {value}" in wait.asked
    assert ("api.max_wait_s" in wait.note(120.0)) is capped


@pytest.mark.parametrize("headers", [
    {"Retry-After": "²"}, {"Retry-After": "nan"}, {"Retry-After": "-5"},
    {"Retry-After": "1e3"}, {"Retry-After": "Sun, 99 Foo 2026 99:99:99 GMT"},
    {"X-RateLimit-Reset": "nan"}, {"X-RateLimit-Reset": "inf"}, {"X-RateLimit-Reset": "-inf"},
    {"X-RateLimit-Reset": "-5"}, {"X-RateLimit-Reset": "²"}, {"X-RateLimit-Reset": "1e999"},
    {"X-RateLimit-Reset": "\x1b]0;pwned\x07"},
])
def test_a_value_that_is_no_wait_means_backoff_and_says_so(headers: dict[str, str]) -> None:
    wait = server_wait(headers, NOW, 120.0)
    assert wait.seconds is None
    assert "not a wait: backing off" in wait.note(120.0)
    assert "\x1b" not in wait.asked and "\x07" not in wait.asked
    error = classify_api_answer(429, b"", headers, NOW, 120.0)
    assert isinstance(error, Throttled) and error.retry_after is None
    delay = decide_retry(error, 1, 5, random.Random(1)).delay_s
    assert math.isfinite(delay) and 0 <= delay <= 0.5


def test_the_gate_never_pauses_for_ever() -> None:
    gate = RateGate(10.0)
    for value in (math.nan, math.inf, -1.0):
        gate.throttle(value)
        assert math.isfinite(gate._paused_until)


def test_an_unexpected_error_becomes_a_fatal_that_names_it() -> None:
    fatal = Fatal("keys refused")
    assert as_fatal(fatal) is fatal
    group = ExceptionGroup("g", [fatal])
    assert as_fatal(group) is group
    mixed = as_fatal(ExceptionGroup("g", [ValueError("x"), KeyError("y")]))
    assert isinstance(mixed, Unexpected)
    assert "ValueError, KeyError" in str(mixed) and "next run" in str(mixed)


def _retry_errors(stderr: str) -> list[str]:
    out = []
    for line in stderr.splitlines():
        try:
            event: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "retrying":
            out.append(str(event.get("error")))
    return out


# A wait beyond api.max_wait_s (10^9 s) stops the run: test_quota_stop.py.
CASES = [
    (ThrottleStyle.RETRY_AFTER_SECONDS, "²", "(Retry-After: \\u00b2), which is not a wait"),
    (ThrottleStyle.RETRY_AFTER_SECONDS, "-5", "(Retry-After: -5), which is not a wait"),
    (ThrottleStyle.RATELIMIT_RESET, "nan", "(X-RateLimit-Reset: nan), which is not a wait"),
    (ThrottleStyle.RATELIMIT_RESET, "inf", "(X-RateLimit-Reset: inf), which is not a wait"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("style", "value", "logged"), CASES,
                         ids=[c[1].encode("unicode_escape").decode() for c in CASES])
async def test_a_run_against_any_throttling_answer_ends_with_every_row_validated(
        tmp_path: Path, style: ThrottleStyle, value: str, logged: str) -> None:
    # Every third API call (presign, snapshot list, reconcile polls) answers 429
    # with this wait header, sent verbatim by the sandbox.
    opts = SandboxOptions(validation_delay_s=0.1, fail_rate_429=0.35, throttle_style=style,
                          throttle_value=value, seed=5)
    async with Sandbox(opts) as sb:
        manifest = write_manifest(tmp_path, make_files(tmp_path, 6, ["1", "2"], size=300))
        cfg = config(tmp_path, sb, api={"max_attempts": 12, "max_wait_s": 1.0},
                     reconcile={"deadline_s": 40, "poll_interval_s": 0.2})
        result = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        stats = sb.stats()
    assert result.code == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    report = result.report(tmp_path / "reports")
    assert [it["status"] for it in report["items"]] == ["validated"] * 6
    # The throttled calls include the reconcile's (list polls, presign_url look-ups).
    assert sum(stats["requests"][k].get("429", 0) for k in ("list", "presign_url")) >= 1, \
        stats["requests"]
    assert stats["requests"]["presign"].get("429", 0) >= 1, stats["requests"]
    errors = _retry_errors(result.stderr)
    assert errors and all(logged in e for e in errors if "429" in e), errors[:3]
