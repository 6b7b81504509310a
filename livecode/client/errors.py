"""The client's exceptions: the server's own error tree, plus the socket going away.

An `error {code, message, retry_after?}` event or a REST error body is raised as the class of
`livecode.errors` with that code, so one ``except NotFound`` serves server and client code::

    LivecodeError                 code           from REST
    ├── BadRequest                bad_request    400
    │   ├── TooLarge              too_large      413
    │   └── InvalidValue          bad_request    422
    ├── Unauthorized              unauthorized   401
    ├── Forbidden                 forbidden      403
    ├── NotFound                  not_found      404
    ├── Conflict                  conflict       409
    ├── RateLimited               rate_limited   429   retry_after
    ├── Unavailable               unavailable    503   retry_after
    └── InternalError             internal       500

    ConnectionLost (a ConnectionError): the server could not be reached, or the socket closed
    and could not be opened again in time; `close_code` says how it closed, when it did.

What the client cannot raise to anyone (a frame it does not understand, a reconnect) it logs
with `logger(__name__)`.
"""

from __future__ import annotations

from livecode.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InternalError,
    InvalidValue,
    LivecodeError,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthorized,
    Unavailable,
)

# typing costs `livecode run` 3 ms of start, and type checkers read this constant as its own.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any

__all__ = [
    "BadRequest",
    "Conflict",
    "ConnectionLost",
    "Forbidden",
    "InternalError",
    "InvalidValue",
    "LivecodeError",
    "NotFound",
    "RateLimited",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "error_from",
    "error_from_http",
    "logger",
]

# The most general class of each code: InvalidValue (422) and VersionConflict share theirs.
_CLASSES: tuple[type[LivecodeError], ...] = (
    BadRequest,
    TooLarge,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    RateLimited,
    Unavailable,
    InternalError,
)
_BY_CODE = {cls.code: cls for cls in _CLASSES}
_WITH_STATUS: tuple[type[LivecodeError], ...] = (*_CLASSES, InvalidValue)
_BY_HTTP_STATUS = {cls.http_status: cls for cls in _WITH_STATUS}


class ConnectionLost(ConnectionError):
    """The server cannot be reached, or the socket closed and could not be reopened in time.

    A request that was on the wire when the socket dropped and is not safe to send twice
    (create, run, autosave, stdin) raises this too: it may or may not have been carried out.
    """

    def __init__(
        self, message: str, *, close_code: int | None = None, close_reason: str = ""
    ) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.close_reason = close_reason


def error_from(event: dict[str, Any], http_status: int | None = None) -> LivecodeError:
    """The exception for an `error` event or a REST error body's `error` object."""
    code = str(event.get("code", "internal"))
    message = str(event.get("message", code))
    retry_after = event.get("retry_after")
    cls = _BY_CODE.get(code)
    if cls is BadRequest and http_status == InvalidValue.http_status:
        cls = InvalidValue
    if cls is None:  # a code this client does not know yet: keep it in the message
        cls, message = LivecodeError, f"{code}: {message}"
    return cls(message, retry_after=float(retry_after) if retry_after is not None else None)


def error_from_http(status: int, body: Any, retry_after: str | None = None) -> LivecodeError:
    """The exception for a REST answer with an error status, JSON error body or not."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        if retry_after is not None and "retry_after" not in error:
            error = {**error, "retry_after": _seconds(retry_after)}
        return error_from(error, status)
    cls = _BY_HTTP_STATUS.get(status)
    if cls is None:
        cls = Unavailable if status in (502, 504) else BadRequest if status < 500 else InternalError
    return cls(f"HTTP {status}", retry_after=_seconds(retry_after))


def logger(name: str) -> logging.Logger:
    """The logger of client module `name`. logging is imported on the first line logged, not
    at start: it costs `livecode run` 8 ms (bench/bench_cli.py), and most runs log nothing."""
    import logging

    return logging.getLogger(name)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: not worth parsing here
