"""Logging: text lines or one JSON object a line, each carrying the execution and session it
is about.

What a line is about is set once where the work begins (`about(execution_id=...)` in the
executor, the sweeper, the socket's handlers), in a context variable: every line logged inside,
by any module (the store, the bus, runners), carries it. A thread gets its own context, and
the edges' thread hops copy the caller's, so it follows a request into its command.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["JSONFormatter", "about", "configure"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_FIELDS = ("execution_id", "session_id")
_ABOUT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("livecode_about")


@contextlib.contextmanager
def about(**ids: str | None) -> Iterator[None]:
    """Tag every line logged inside the block with these ids (execution_id, session_id)."""
    current = _ABOUT.get({})
    token = _ABOUT.set({**current, **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _ABOUT.reset(token)


class _AboutFilter(logging.Filter):
    """Adds the ids of `about()` to each record (an `extra=` given by the caller wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _ABOUT.get({}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the ids, and the exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record comes: a stream taken once outlives a
    redirection (pytest's capture closes its files; a daemon thread logs after that)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure(level: str, log_format: str) -> None:
    """Set up the root logger: text (the default) or JSON lines on stderr. Called again (a
    second server in one process), it replaces its own handler and leaves others alone."""
    handler = _StderrHandler()
    handler.addFilter(_AboutFilter())
    handler.setFormatter(
        JSONFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
