"""structlog set-up and secret redaction.

Configured once, from the entry point (:func:`configure_logging`); nothing here runs at
import time. ``run_id``, ``tenant``, ``provider`` and ``stream`` are bound through
contextvars by the runner. Every event passes :func:`redact` last before rendering: it
masks fields named like secrets and removes every registered secret value from every
string, exception tracebacks included.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

MASK = "***"
_SECRET_FIELD = re.compile(r"pass(word|wd)?|token|secret|api_?key|authori[sz]ation|credential", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
_MIN_SECRET_LENGTH = 4


class SecretRegistry:
    """The secret values known to this process (decrypted credentials, master keys)."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def register(self, *values: str | None) -> None:
        with self._lock:
            for value in values:
                if value and len(value) >= _MIN_SECRET_LENGTH:
                    self._values.add(value)
            self._pattern = None

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            with self._lock:
                if not self._values:
                    return _URL_USERINFO.sub(r"\g<scheme>***@", text)
                ordered = sorted(self._values, key=len, reverse=True)
                pattern = self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
        return _URL_USERINFO.sub(r"\g<scheme>***@", pattern.sub(MASK, text))


SECRETS = SecretRegistry()


def _scrub_value(value: Any, key: str | None = None) -> Any:
    if key is not None and _SECRET_FIELD.search(key) and value is not None:
        return MASK
    if isinstance(value, str):
        return SECRETS.scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    if isinstance(value, BaseException):
        return SECRETS.scrub(f"{type(value).__name__}: {value}")
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-named fields and scrub registered secret values."""
    for key in list(event_dict):
        event_dict[key] = _scrub_value(event_dict[key], None if key == "event" else key)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog once: JSON lines off a terminal, readable lines on one."""
    out = stream or sys.stderr
    renderer: Any
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
        processors += [structlog.processors.format_exc_info, redact, renderer]
    else:
        processors += [structlog.processors.format_exc_info, redact, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def bind_context(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**values)


def clear_context(keys: Iterable[str] | None = None) -> None:
    if keys is None:
        structlog.contextvars.clear_contextvars()
    else:
        structlog.contextvars.unbind_contextvars(*keys)
