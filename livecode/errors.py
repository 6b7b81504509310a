"""The service's error tree: each error knows its wire code and its HTTP status.

::

    LivecodeError                 code           HTTP  WS
    ├── BadRequest                bad_request    400   error event, socket stays open
    │   ├── TooLarge              too_large      413
    │   └── InvalidValue          bad_request    422
    ├── Unauthorized              unauthorized   401
    ├── Forbidden                 forbidden      403   a tenant's key on the operator's /metrics
    ├── NotFound                  not_found      404   (also: another tenant's)
    ├── Conflict                  conflict       409
    │   └── VersionConflict       conflict       409   current_version
    ├── RateLimited               rate_limited   429   retry_after
    ├── Unavailable               unavailable    503   retry_after
    │   └── SchemaMissing         unavailable    503   the database lacks tables: `livecode init-db`
    └── InternalError             internal       500

REST registers one handler for ``LivecodeError`` (Starlette finds it through the MRO); the
WebSocket catches it in its receive loop and sends ``{"type": "error", ...}``. A user program
failing is a result, not one of these.

Translate a dependency's exceptions where it is called, with :func:`unavailable_on`::

    with unavailable_on(sqlalchemy.exc.OperationalError, message="database unavailable"):
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# The client (livecode/client/errors.py) raises these classes too, and `livecode run` must start
# fast: typing (3 ms) and logging (8 ms) are not imported at start. Type checkers read this
# constant as typing's own.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InternalError",
    "InvalidValue",
    "LivecodeError",
    "NotFound",
    "RateLimited",
    "SchemaMissing",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "VersionConflict",
    "unavailable_on",
]


class LivecodeError(Exception):
    """Base of every error a client may see; ``code`` and ``http_status`` come from the class."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        self.message = message if message is not None else self.default_message
        self.retry_after = retry_after
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, retry_after={self.retry_after!r})"


class BadRequest(LivecodeError):
    """The request is malformed: bad JSON, a missing or mistyped field."""

    code = "bad_request"
    http_status = 400
    default_message = "bad request"


class TooLarge(BadRequest):
    """A source, stdin or message is over its size limit."""

    code = "too_large"
    http_status = 413
    default_message = "too large"


class InvalidValue(BadRequest):
    """A well-formed field holds a value we refuse (e.g. an unknown language)."""

    code = "bad_request"
    http_status = 422
    default_message = "invalid value"


class Unauthorized(LivecodeError):
    """No API key, or an unknown one."""

    code = "unauthorized"
    http_status = 401
    default_message = "unauthorized"


class Forbidden(LivecodeError):
    """A good key, for something that is not a tenant's: the operator's /metrics."""

    code = "forbidden"
    http_status = 403
    default_message = "forbidden"


class NotFound(LivecodeError):
    """No such session or execution, or it belongs to another tenant."""

    code = "not_found"
    http_status = 404
    default_message = "not found"


class Conflict(LivecodeError):
    """The request contradicts the current state."""

    code = "conflict"
    http_status = 409
    default_message = "conflict"


class VersionConflict(Conflict):
    """A save named a ``base_version`` that is no longer the session's version."""

    def __init__(self, current_version: int, message: str | None = None) -> None:
        self.current_version = current_version
        if message is None:
            message = f"version conflict: the session is at version {current_version}"
        super().__init__(message)


class RateLimited(LivecodeError):
    """Too many requests; ``retry_after`` (seconds) says when to try again, if ever."""

    code = "rate_limited"
    http_status = 429
    default_message = "rate limited"


class Unavailable(LivecodeError):
    """A dependency (database, Redis, the queue) is down or full; try again later."""

    code = "unavailable"
    http_status = 503
    default_message = "service unavailable"


class SchemaMissing(Unavailable):
    """The database has no livecode schema, or an older one: an operator's step is missing."""

    def __init__(self, detail: str = "the livecode tables are missing") -> None:
        super().__init__(
            f"the database is not set up ({detail}): run `livecode init-db`", retry_after=60.0
        )


class InternalError(LivecodeError):
    """Our own fault. The message sent to clients never carries a traceback."""

    code = "internal"
    http_status = 500
    default_message = "internal error"


@contextlib.contextmanager
def unavailable_on(
    *exc_types: type[BaseException],
    message: str = "a dependency is unavailable",
    retry_after: float | None = None,
) -> Iterator[None]:
    """Translate the given exception types raised inside the block into :class:`Unavailable`.

    The original exception is chained (``raise ... from exc``) and logged at WARNING.
    A ``LivecodeError`` raised inside the block always passes through untouched.
    """
    try:
        yield
    except LivecodeError:
        raise
    except exc_types as exc:
        import logging

        logging.getLogger(__name__).warning("%s: %s: %s", message, type(exc).__name__, exc)
        raise Unavailable(message, retry_after=retry_after) from exc
