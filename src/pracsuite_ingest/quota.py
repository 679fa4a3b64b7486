"""A spent quota, told apart from throttling (pure).

API Gateway, in front of PracSuite's API, answers 429 in two ways: `{"message": "Too
Many Requests"}` when a key goes faster than its usage plan's rate (throttling: wait a
little, go on), and `{"message": "Limit Exceeded"}` when the key's usage-plan quota
(calls per day, week or month) is used up: no call is taken until the quota period
resets, and the answer says neither when nor how long. A run that kept retrying would
wait for hours and then call every unconfirmed upload `missing` when it could not ask.
An answer that asks a wait longer than `api.max_wait_s` (a `Retry-After` of 10^9 s)
is the same for the run: it cannot go on now.

`quota_spent` decides from the answer alone (status, PracSuite's message, the wait
asked), so the caller only acts: it stops taking work as a SIGTERM does and exits 3
(docs/contract.md, "A spent quota is not throttling").
"""

from __future__ import annotations

from datetime import UTC, datetime

from pracsuite_ingest.errors import QuotaSpent
from pracsuite_ingest.retry import ServerWait

QUOTA_MESSAGE = "limit exceeded"  # API Gateway's usage-plan quota answer, any case


def rerun_after(asked_s: float | None, now: float) -> str | None:
    """When PracSuite said to come back, as a UTC time; None if it did not say (or
    said something no calendar holds)."""
    if asked_s is None:
        return None
    try:
        when = datetime.fromtimestamp(now + asked_s, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def quota_spent(status: int, message: str, wait: ServerWait, text: str, now: float,
                max_wait_s: float) -> QuotaSpent | None:
    """The `QuotaSpent` this answer means, or None (throttling, or no error at all).

    `message`: PracSuite's own words (its error detail, or API Gateway's `message`);
    `wait`: the wait the answer asked (`retry.server_wait`); `text`: the answer as the
    operator reads it (status, code, detail, request id).
    """
    if status != 429 and status < 500:
        return None
    spent = status == 429 and message.strip().lower() == QUOTA_MESSAGE
    too_long = wait.asked_s is not None and wait.asked_s > max_wait_s
    if not (spent or too_long):
        return None
    what = (f"PracSuite answered {text}: the API key's quota is used up (API Gateway's "
            "usage-plan quota), and no call is taken until it resets" if spent else
            f"PracSuite answered {text} and asked to wait {wait.asked}, longer than "
            f"api.max_wait_s ({max_wait_s:g} s)")
    when = rerun_after(wait.asked_s, now)
    if when is not None:
        next_step = f"PracSuite said to come back after {when}: run again then"
    else:
        next_step = ("PracSuite did not say when the quota resets: run again later (the "
                     "vendor's usage plan says when: daily, weekly or monthly)")
    return QuotaSpent(f"{what}. The run stopped taking work; uploads not yet confirmed "
                      f"are pending and the next run resumes them. {next_step}")
