"""A Python client for livecode's WebSocket protocol (docs/protocol.md), sync and asyncio.

::

    from livecode.client import Client              # or AsyncClient, with the same methods

    with Client("http://127.0.0.1:8000") as client:
        execution = client.execute("python", "print(input()[::-1])", stdin="olleh")
        print(execution.status, execution.stdout)   # COMPLETED hello

Both reconnect by themselves when the socket drops and resume each run with `since`, so its
events come once each, in order, with nothing lost. Server errors raise the classes of
`livecode.errors` (NotFound, RateLimited, ...); a server out of reach raises ConnectionLost.

Every name is imported on first use: `livecode run` must start in tens of milliseconds, and
the threading client must not pay for asyncio (nor `livecode serve` for the client).
"""

from __future__ import annotations

# typing costs `livecode run` 3 ms of start, and type checkers read this constant as its own.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from livecode.client.asyncio import AsyncClient, AsyncRun
    from livecode.client.errors import (
        BadRequest,
        Conflict,
        ConnectionLost,
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
    "Forbidden",
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

# Where each name lives: a name is imported on first use, so that `livecode serve` (which
# reads the `run` subcommand's options from terminal.py) loads none of the client, and the
# threading client none of asyncio.
_LAZY = {
    **dict.fromkeys(("AsyncClient", "AsyncRun"), "livecode.client.asyncio"),
    **dict.fromkeys(("Client", "Run"), "livecode.client.sync"),
    **dict.fromkeys(("DEFAULT_SERVER",), "livecode.client.rest"),
    **dict.fromkeys(
        "Event Execution Finished Language Limits Output Saved Session Status".split(),
        "livecode.client.models",
    ),
    **dict.fromkeys(
        "BadRequest Conflict ConnectionLost Forbidden InternalError InvalidValue LivecodeError "
        "NotFound "
        "RateLimited TooLarge Unauthorized Unavailable".split(),
        "livecode.client.errors",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'livecode.client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
