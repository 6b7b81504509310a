"""Who a request or socket acts for: its owner, the tenant of SPEC.md's API keys.

Each edge (REST, WebSocket, SSE) asks `owner()` once per request or socket and passes the
answer to every command as ``owner=``; the store answers another owner's sessions and
executions with NotFound. Until API keys exist everyone is the same owner, ``""``.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

__all__ = ["owner"]


def owner(connection: HTTPConnection) -> str:
    """The owner a request or socket acts for: ``""`` until API keys exist (SPEC.md, Security)."""
    return ""
