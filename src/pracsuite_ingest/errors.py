"""Errors grouped by what the caller does about them.

- `Retryable`: try the same step again after a wait (`retry_after` when the server said).
- `Permanent`: this item fails; record the reason and go on with the others.
- `Fatal`: the whole run cannot go on (keys refused, state unusable); exit 3.
- `QuotaSpent` (a `Fatal`): PracSuite will take no more calls for now; the run stops
  as a SIGTERM stops it (no new work, in-flight uploads finished or recorded, the
  report written with unconfirmed uploads `pending`) and exits 3.
- `ConfigError`: the configuration is wrong; exit 2, nothing sent.

Messages never carry a key, a policy, a signature or a session token.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base of every error this program raises on purpose."""


class ConfigError(IngestError):
    """Configuration is missing, unknown or invalid. Exit 2."""


class Fatal(IngestError):
    """The run cannot go on. Exit 3."""


class StateUnusable(Fatal):
    """The state file cannot be opened or written."""


class CredentialsRefused(Fatal):
    """PracSuite refused a key; the message says which one to check."""


class QuotaSpent(Fatal):
    """PracSuite's answer says no call will be taken for a long while: the key's quota
    is used up (API Gateway's 429 `Limit Exceeded`), or it asks a wait beyond
    `api.max_wait_s`. Not an item's failure: the caller stops taking work
    (`quota.py` decides; the message says what PracSuite answered and when to rerun)."""


class Unexpected(Fatal):
    """A bug, not a condition the worker knows, stopped the run: exit 3 with the report
    written and the state saved, never a bare traceback."""


def _leaf_types(exc: BaseException) -> list[str]:
    if isinstance(exc, BaseExceptionGroup):
        return [name for inner in exc.exceptions for name in _leaf_types(inner)]
    return [type(exc).__name__]


def as_fatal(exc: Exception) -> Exception:
    """`exc` itself if it is (a group of nothing but) `Fatal`; else an `Unexpected` that
    names what happened, for the run to end as docs/contract.md's exit 3 says."""
    if isinstance(exc, Fatal):
        return exc
    what: BaseException = exc
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(Fatal)
        if rest is None:
            return exc
        what = rest
    kinds = ", ".join(dict.fromkeys(_leaf_types(what)))
    return Unexpected(f"unexpected error ({kinds}) stopped the run; please report it. "
                      "Every result so far is in the state file and the report; the next "
                      "run with the same state file resumes")


class Retryable(IngestError):
    """A transient failure: the same request may succeed later."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Permanent(IngestError):
    """This item cannot be sent; retrying will not help."""


SOURCE_CHANGED = "the file changed while being sent; the next run sends it"


class SourceChanged(Permanent):
    """The file is not the one checked (changed, replaced, a link, outside input.root):
    the upload was stopped before its body was complete, so S3 stored nothing."""

    def __init__(self, message: str = SOURCE_CHANGED) -> None:
        super().__init__(message)


class Throttled(Retryable):
    """429 from PracSuite or S3 SlowDown: slow the whole process down."""


class OutcomeUnknown(Retryable):
    """The connection dropped after the body was sent: S3 may have stored it.

    Such an upload is reconciled before it is ever sent again.
    """


class PolicyExpired(Retryable):
    """S3 refused the POST because its policy expired: presign again."""


def describe_api_error(status: int, code: str, detail: str, request_id: str) -> str:
    """PracSuite's error as an operator reads it, with the request id to quote."""
    text = f"PracSuite {status} {code or 'ERROR'}"
    if detail:
        text += f": {detail}"
    if request_id:
        text += f" (request_id {request_id})"
    return text


def describe_s3_error(status: int, code: str, message: str) -> str:
    """S3's XML error as an operator reads it."""
    text = f"S3 {status} {code or 'Error'}"
    if message:
        text += f": {message}"
    return text
