"""A spent quota stops the run, honestly (issue 22.3; docs/contract.md, "A spent quota
is not throttling"): PracSuite's API Gateway answers 429 `{"message": "Limit
Exceeded"}` once the vendor key's usage-plan quota is used up, with no Retry-After.
The run stops taking work, writes its report with every unconfirmed upload `pending`
(never `missing` nor `failed` because it could not ask), exits 3 naming PracSuite's
answer, and the rerun after the quota returns validates each file exactly once. The
same for an answer that asks a wait beyond `api.max_wait_s` (10^9 s)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from e2e import config, make_files, run_cli, write_manifest
from pracsuite_ingest.api import classify_api_answer
from pracsuite_ingest.errors import QuotaSpent, Throttled
from pracsuite_ingest.sandbox import Sandbox, SandboxOptions

NOW = 1_800_000_000.0


@pytest.mark.parametrize(("status", "body", "headers", "spent"), [
    (429, b'{"message": "Limit Exceeded"}', {}, True),
    (429, b'{"message": "limit exceeded"}', {"Retry-After": "30"}, True),
    (429, b'{"message": "Too Many Requests"}', {}, False),
    (429, b'{"message": "Too Many Requests"}', {"Retry-After": "1000000000"}, True),
    (503, b"", {"Retry-After": "1000000000"}, True),
    (429, b"", {"Retry-After": "120"}, False),
    (429, b"", {"Retry-After": "nan"}, False),
    (400, b'{"message": "Limit Exceeded"}', {}, False),
])
def test_a_spent_quota_is_told_from_throttling(status: int, body: bytes,
                                               headers: dict[str, str], spent: bool) -> None:
    error = classify_api_answer(status, body, headers, NOW, 120.0)
    assert isinstance(error, QuotaSpent) is spent
    if spent:
        assert str(status) in str(error) and "run again" in str(error)
    elif status == 429:
        assert isinstance(error, Throttled)


def test_a_quota_answer_that_says_when_names_the_time() -> None:
    error = classify_api_answer(429, b'{"message": "Limit Exceeded"}',
                                {"Retry-After": "3600"}, NOW, 120.0)
    assert "come back after 2027-01-15T09:00:00Z" in str(error)
    never = classify_api_answer(429, b"", {"Retry-After": "1" + "0" * 30}, NOW, 120.0)
    assert isinstance(never, QuotaSpent) and "did not say when" in str(never)


def _per_file(stats: dict[str, Any]) -> Counter[tuple[str, str]]:
    return Counter((client, r["file_name"])
                   for client, entry in stats["records_created"].items()
                   for r in entry["records"])


@pytest.mark.slow
@pytest.mark.parametrize(("message", "retry_after", "said"), [
    ("Limit Exceeded", None, "Limit Exceeded"),
    ("Too Many Requests", "1000000000", "Retry-After: 1000000000"),
], ids=["limit-exceeded", "wait-1e9"])
async def test_a_spent_quota_stops_the_run_and_the_rerun_sends_each_file_once(
        tmp_path: Path, message: str, retry_after: str | None, said: str) -> None:
    # 30 files of 3 patients; the quota runs out after 20 API calls (snapshots,
    # presigns, polls), mid-run, with uploads sent and not yet confirmed.
    rows = make_files(tmp_path, 30, ["1", "2", "3"], size=2000)
    manifest = write_manifest(tmp_path, rows)
    opts = SandboxOptions(validation_delay_s=0.5, quota_after=20, quota_message=message,
                          quota_retry_after=retry_after)
    async with Sandbox(opts) as sb:
        cfg = config(tmp_path, sb, api={"requests_per_second": 50.0, "max_wait_s": 120.0},
                     upload={"concurrency": 2, "presign_concurrency": 2},
                     reconcile={"deadline_s": 600, "poll_interval_s": 0.2})
        first = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                              cwd=tmp_path)
        spent = sb.stats()
        report = first.report(tmp_path / "reports")
        sb.reset_faults()  # the quota period resets
        second = await run_cli("run", "--config", str(cfg), "--manifest", str(manifest),
                               cwd=tmp_path)
        after = sb.stats()
    assert first.code == 3, first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    assert said in first.stderr and "run again" in first.stderr, first.stderr[-2000:]
    assert spent["faults"].get("quota", 0) >= 1, spent["faults"]
    statuses = Counter(it["status"] for it in report["items"])
    assert len(report["items"]) == 30
    assert statuses["missing"] == 0 and statuses["failed"] == 0, statuses
    assert statuses["pending"] >= 1, statuses
    assert second.code == 0, second.stderr[-3000:]
    assert {it["status"] for it in second.report(tmp_path / "reports")["items"]} <= {
        "validated", "skipped"}
    per_file = _per_file(after)
    assert len(per_file) == 30 and set(per_file.values()) == {1}, per_file
