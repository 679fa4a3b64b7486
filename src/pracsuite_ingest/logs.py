"""structlog set-up: console on a TTY, JSON lines otherwise; redaction of secrets.

Two processors guard what leaves the process:
- `redact`: any key that names a secret is masked, and any registered secret value
  (the API keys) is masked wherever it appears in a string;
- `hide_health_data`: patient file names and paths are dropped unless the operator
  opted in with `log.file_names = true`.
Both are pure functions of the event dict.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

SECRET_KEY_NAMES = frozenset(
    {
        "policy",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "signature",
        "credential",
        "security_token",
        "fields",
        "vendor_api_key",
        "practice_api_key",
        "x-api-key",
        "a-api-key",
        "headers",
    }
)
HEALTH_DATA_KEYS = frozenset({"file_name", "path", "key"})
MASK = "[redacted]"

_secret_values: set[str] = set()


def register_secret(value: str) -> None:
    """Mask `value` wherever it appears in a log line from now on."""
    if len(value) >= 4:
        _secret_values.add(value)


def scrub(text: str) -> str:
    """`text` with every registered secret value masked."""
    for secret in _secret_values:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event):
        if k.lower() in SECRET_KEY_NAMES:
            event[k] = MASK
        elif isinstance(event[k], str):
            event[k] = scrub(event[k])
    return event


def make_hide_health_data(show: bool) -> structlog.types.Processor:
    def hide_health_data(
        _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not show:
            for k in HEALTH_DATA_KEYS & event.keys():
                del event[k]
        return event

    return hide_health_data


def configure(level: str = "info", fmt: str = "auto", *, file_names: bool = False,
              stream: TextIO | None = None) -> None:
    """Route structlog to `stream` (stderr) at `level` in the chosen format."""
    out = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            make_hide_health_data(file_names),
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger("pracsuite_ingest").bind(**bind)
