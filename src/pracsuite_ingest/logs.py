"""structlog set-up: console on a TTY, JSON lines otherwise; redaction of secrets.

Two processors guard what leaves the process:
- `redact`: any key that names a secret is masked at any depth, any registered secret
  value (the API keys) and anything shaped like a presigned POST's policy, signature,
  credential or token is masked wherever it appears in a string (`scrub`);
- `hide_health_data`: patient file names and paths are dropped unless the operator
  opted in with `log.file_names = true`.
Both are pure functions of the event dict. `configure` also sends the standard
library's log records (aiohttp, asyncio) and uncaught tracebacks through `scrub`.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any, TextIO

import structlog

from pracsuite_ingest.visible import visible

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


# What a presigned POST's secrets look like in any text, whoever wrote it: by name
# (`name=value`, `"name": "value"`, `('name', 'value')`, a header line) and by shape (a
# base64 JSON policy, a SigV4 credential scope). Registering every issued value instead
# would grow with the run; these shapes do not.
_VALUE = r"[^\s'\"&,;)\]}]+"
_SECRET_SHAPES = (
    (re.compile(r"(?i)\b(x-amz-signature|x-amz-credential|x-amz-security-token|x-api-key"
                r"|a-api-key)(['\"]?\s*[:=,]\s*['\"]?)" + _VALUE), rf"\1\2{MASK}"),
    (re.compile(r"(?i)\b(policy)(=|['\"]\s*[:,]\s*['\"])" + _VALUE), rf"\1\2{MASK}"),
    (re.compile(r"eyJ[A-Za-z0-9+/_-]{16,}={0,2}"), MASK),
    (re.compile(r"\b[A-Za-z0-9]{8,128}/\d{8}/[a-z0-9-]+/[a-z0-9-]+/aws4_request\b"), MASK),
)
# Every text a shape above matches holds one of these: a text without any is left as
# it is after one search instead of four substitutions (most of a log line's strings).
_SHAPE_MARKS = re.compile(r"(?i:x-amz-|x-api-key|a-api-key|policy)|eyJ|aws4_request")
_MAX_DEPTH = 8


def scrub(text: str) -> str:
    """`text` with every registered secret value, and anything shaped like a presigned
    POST's policy, signature, credential or token, masked."""
    for secret in _secret_values:
        if secret in text:
            text = text.replace(secret, MASK)
    if _SHAPE_MARKS.search(text) is None:
        return text
    for pattern, replacement in _SECRET_SHAPES:
        text = pattern.sub(replacement, text)
    return text


def _redacted(value: Any, depth: int = 0) -> Any:
    """`value` with secret-named keys masked at any depth and every string scrubbed; an
    object the renderer would `repr` is turned into its scrubbed repr here."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub(value)
    if depth >= _MAX_DEPTH:
        return MASK
    if isinstance(value, Mapping):
        return {k: MASK if str(k).lower() in SECRET_KEY_NAMES else _redacted(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[0], str) \
            and value[0].lower() in SECRET_KEY_NAMES:  # a (name, value) pair of a form
        return [value[0], MASK]
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(v, depth + 1) for v in value]
    return scrub(repr(value))


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event):
        if k.lower() in SECRET_KEY_NAMES:
            event[k] = MASK
        else:
            event[k] = _redacted(event[k])
    return event


def _shown(value: Any, keep_lines: bool = False) -> Any:
    if isinstance(value, str):
        return visible(value, keep_lines=keep_lines)
    if isinstance(value, Mapping):
        return {k: _shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(v) for v in value]
    return value


def show_never_obey(_: Any, __: str, event: MutableMapping[str, Any]
                    ) -> MutableMapping[str, Any]:
    """Every string of a console line with control and invisible characters shown as
    escapes (`visible.visible`): a file name or a server's error text is shown on the
    terminal, never obeyed. A traceback keeps its line breaks. (JSON lines escape
    them already.)"""
    for k in list(event):
        event[k] = _shown(event[k], keep_lines=k in ("exception", "stack"))
    return event


class _ToStructlog(logging.Handler):
    """Other libraries' log records (aiohttp, asyncio) through the same processors, so
    that they are redacted and rendered like ours."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extra: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                extra["exc_info"] = record.exc_info
            structlog.get_logger(record.name).log(record.levelno, record.getMessage(), **extra)
        except Exception:
            self.handleError(record)


def _scrubbed_traceback(exc_type: type[BaseException], exc: BaseException,
                        tb: TracebackType | None) -> None:
    sys.stderr.write(visible(scrub("".join(traceback.format_exception(exc_type, exc, tb))),
                             keep_lines=True))


def _scrubbed_thread_traceback(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _scrubbed_traceback(args.exc_type, args.exc_value, args.exc_traceback)


def guard_other_output(level: str) -> None:
    """Route the standard library's logging (at `level`, at least warning) and every
    uncaught exception's traceback through redaction before they reach stderr."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ToStructlog)]:
        root.removeHandler(handler)
    root.addHandler(_ToStructlog())
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))
    sys.excepthook = _scrubbed_traceback
    threading.excepthook = _scrubbed_thread_traceback


_REQUEST_ID = re.compile(r"request_id ([0-9A-Za-z._:-]+)")


def add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """PracSuite's `request_id`, quoted in an error message, as a field of its own."""
    if "request_id" not in event:
        for k in ("error", "reason"):
            found = _REQUEST_ID.search(event[k]) if isinstance(event.get(k), str) else None
            if found:
                event["request_id"] = found.group(1)
                break
    return event


class _CurrentStderr:
    """`sys.stderr` as it is at each write: the progress display redirects it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def bind_context(**values: Any) -> None:
    """Bind `values` to every log line of the current asyncio task (and its children)."""
    structlog.contextvars.bind_contextvars(**values)


def make_hide_health_data(show: bool) -> structlog.types.Processor:
    def hide_health_data(
        _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not show:
            for k in HEALTH_DATA_KEYS & event.keys():
                del event[k]
        return event

    return hide_health_data


# One INFO line per file in a scheduler's log (JSON); on a terminal the display counts
# them instead of listing hundreds of lines (`log.level = "debug"` lists them there too).
COUNTED_ON_A_TERMINAL = frozenset({"item validated", "item carried to reconcile"})


def counted_not_listed(_: Any, method: str, event: MutableMapping[str, Any]
                       ) -> MutableMapping[str, Any]:
    """Drop the per-file INFO lines a terminal's display counts (`COUNTED_ON_A_TERMINAL`)."""
    if method == "info" and event.get("event") in COUNTED_ON_A_TERMINAL:
        raise structlog.DropEvent
    return event


def configure(level: str = "info", fmt: str = "auto", *, file_names: bool = False,
              stream: TextIO | None = None) -> None:
    """Route structlog to `stream` (stderr) at `level` in the chosen format."""
    out: Any = stream or _CurrentStderr()
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    per_file = level == "debug" or not use_console
    structlog.configure(
        processors=[
            *([] if per_file else [counted_not_listed]),
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            make_hide_health_data(file_names),
            add_request_id,
            redact,
            *([show_never_obey] if use_console else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    guard_other_output(level)


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger("pracsuite_ingest").bind(**bind)
