"""Where a server is, how to prove who we are, and the REST call the socket has no message for.

The standard library's urllib (imported when a call needs it) rather than httpx, which costs
about 40 ms of start to import, and `livecode run` must start fast (bench/bench_cli.py).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

from livecode.client.errors import ConnectionLost, error_from_http
from livecode.client.models import Language

# typing costs `livecode run` 3 ms of start, and type checkers read this constant as its own.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["DEFAULT_SERVER", "Endpoints", "endpoints", "get_json", "languages"]

DEFAULT_SERVER = "http://127.0.0.1:8000"


class Endpoints:
    """The HTTP base URL and the WebSocket URL of one server, and the headers to send it."""

    __slots__ = ("http", "websocket", "headers")

    def __init__(self, http: str, websocket: str, headers: dict[str, str]) -> None:
        self.http = http
        self.websocket = websocket
        self.headers = headers


def endpoints(server: str, api_key: str | None = None) -> Endpoints:
    """Endpoints of `server`: http(s)://host:port[/prefix], or its ws(s):// spelling.

    Behind a reverse proxy under a prefix, the socket is at {prefix}/ws.
    """
    parts = urlsplit(server if "://" in server else f"http://{server}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not a server URL: {server!r} (expected http://host:port)")
    path = parts.path.rstrip("/").removesuffix("/ws")
    http = urlunsplit((scheme, parts.netloc, path, "", ""))
    ws_scheme = "ws" if scheme == "http" else "wss"
    websocket = urlunsplit((ws_scheme, parts.netloc, path + "/ws", "", ""))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return Endpoints(http, websocket, headers)


def get_json(where: Endpoints, path: str, timeout_s: float) -> Any:
    """GET a JSON document; an error status raises the server's error, no answer ConnectionLost."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        where.http + path, headers={"Accept": "application/json", **where.headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            body = _json_or_none(exc.read())
            raise error_from_http(exc.code, body, exc.headers.get("Retry-After")) from None
    except (OSError, ValueError) as exc:  # URLError is an OSError; ValueError: not JSON
        raise ConnectionLost(f"no answer from {where.http}{path}: {_reason(exc)}") from exc


def languages(where: Endpoints, timeout_s: float) -> list[Language]:
    """GET /languages: what the server runs, with the versions it detected."""
    return [Language.from_json(item) for item in get_json(where, "/languages", timeout_s)]


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc)
