"""A Python client for livecode's WebSocket protocol (docs/protocol.md), sync and asyncio.

::

    from livecode.client import Client              # or AsyncClient, with the same methods

    with Client("http://127.0.0.1:8000") as client:
        execution = client.execute("python", "print(input()[::-1])", stdin="olleh")
        print(execution.status, execution.stdout)   # COMPLETED hello

Both reconnect by themselves when the socket drops and resume each run with `since`, so its
events come once each, in order, with nothing lost. Server errors raise the classes of
`livecode.errors` (NotFound, RateLimited, ...); a server out of reach raises ConnectionLost.

`Client` and `AsyncClient` are imported on first use: the threading client must not pay for
asyncio's import (`livecode run` starts in tens of milliseconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from livecode.client.errors import (
    BadRequest,
    Conflict,
    ConnectionLost,
    InternalError,
    InvalidValue,
    LivecodeError,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from livecode.client.models import (
    Event,
    Execution,
    Finished,
    Language,
    Limits,
    Output,
    Saved,
    Session,
    Status,
)
from livecode.client.rest import DEFAULT_SERVER

if TYPE_CHECKING:
    from livecode.client.asyncio import AsyncClient, AsyncRun
    from livecode.client.sync import Client, Run

__all__ = [
    "DEFAULT_SERVER",
    "AsyncClient",
    "AsyncRun",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionLost",
    "Event",
    "Execution",
    "Finished",
    "InternalError",
    "InvalidValue",
    "Language",
    "Limits",
    "LivecodeError",
    "NotFound",
    "Output",
    "RateLimited",
    "Run",
    "Saved",
    "Session",
    "Status",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]

_LAZY = {
    "Client": "livecode.client.sync",
    "Run": "livecode.client.sync",
    "AsyncClient": "livecode.client.asyncio",
    "AsyncRun": "livecode.client.asyncio",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'livecode.client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
