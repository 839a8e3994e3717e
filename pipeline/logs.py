"""structlog set-up: readable on a terminal, JSON lines in services, secrets redacted.

The run id and stream are bound with `structlog.contextvars`, so every line a stream logs
carries them without being passed around. Redaction works on two levels: keys whose name says
"secret" are masked whatever their value, and the literal values of every configured secret are
masked wherever they appear inside any string (an error text quoting a URL, say).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

import orjson
import structlog

from pipeline.text import printable

LogFormat = Literal["console", "json"]

REDACTED = "***"
_SECRET_KEY_PARTS = ("authorization", "token", "password", "secret", "hmac", "cookie", "jsessionid")


class SecretRegistry:
    """The set of secret values that must never be printed, filled from the configuration."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, values: Iterable[str | None]) -> None:
        with self._lock:
            # Very short values would mask ordinary words; real secrets are longer.
            self._values.update(v for v in values if v and len(v) >= 4)

    def redact(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


secrets = SecretRegistry()


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in _SECRET_KEY_PARTS)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return secrets.redact(value)
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _is_secret_key(k) else _redact_value(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, BaseException):
        return secrets.redact(str(value))
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: masks secret-named keys and every known secret value."""
    for key in list(event_dict):
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


def _printable_value(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {k: _printable_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable_value(v) for v in value]
    return value


def escape_controls(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: control characters in values (a source's error body, a quarantined
    value) shown as escapes (`pipeline.text`), so a log tailed on a terminal cannot be steered
    by what a source sent. Tracebacks are rendered later and keep their lines."""
    for key, value in event_dict.items():
        if key != "exc_info":
            event_dict[key] = _printable_value(value)
    return event_dict


def _redact_rendered(_logger: Any, _method: str, rendered: Any) -> Any:
    """Last processor: masks secret values that a renderer pulled out of an exception."""
    if isinstance(rendered, bytes):
        return secrets.redact(rendered.decode()).encode()
    if isinstance(rendered, str):
        return secrets.redact(rendered)
    return rendered


class _StderrLogger:
    """Writes to whatever `sys.stderr` is at the time of the call, not at configuration: a
    redirected or replaced stderr (a test's capture, a daemon's log file) keeps working."""

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def default_format() -> LogFormat:
    return "console" if sys.stderr.isatty() else "json"


def configure_logging(fmt: LogFormat | None = None, level: str = "info") -> None:
    """Configure structlog for the whole process; call once from the CLI."""
    fmt = fmt or default_format()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
        escape_controls,
    ]
    if fmt == "json":
        rendering: list[Any] = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(
                serializer=lambda obj, **_: orjson.dumps(obj, default=str).decode()
            ),
            _redact_rendered,
        ]
    else:
        rendering = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()), _redact_rendered]
    processors = [*shared, *rendering]
    _route_stdlib_logging(shared, rendering)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *_: _StderrLogger(),
        cache_logger_on_first_use=False,
    )


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            _StderrLogger().msg(self.format(record))
        except Exception:
            self.handleError(record)


def _route_stdlib_logging(shared: list[Any], rendering: list[Any]) -> None:
    """Libraries that log through `logging` (the job queue, the connection pool) come out as
    our lines do: the same format, the run's context, secrets masked. Their warnings and
    errors only: their progress is in our own events."""
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)  # configured again (tests): one handler, not two
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
