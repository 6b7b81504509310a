"""What the server does for browsers: the WebSocket Origin allowlist, CORS for REST, and
security headers on every answer (SPEC.md, Security).

``LIVECODE_ALLOWED_ORIGINS`` lists the origins (``https://editor.example.com``) whose pages may
open /ws and call the REST API; unset, only pages served by this very host may (the Origin's
host and port equal the request's Host). ``*`` allows any. A client that sends no Origin (a
script, a CLI) is no browser and is not asked for one.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

__all__ = [
    "DEFAULT_SECURITY_HEADERS",
    "SecurityHeaders",
    "cors_middleware",
    "inline_script_csp",
    "origin_allowed",
]

logger = logging.getLogger(__name__)

# Every answer that sets none of its own: JSON has nothing to load, and nothing may frame it.
DEFAULT_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
CORS_METHODS = ["GET", "POST", "PATCH", "DELETE"]
CORS_HEADERS = ["Authorization", "Content-Type", "Last-Event-ID", "X-Auth-Token"]
CORS_MAX_AGE_S = 600
# A refused Origin is logged once a minute at most (a page retrying must not flood the log).
REFUSAL_LOG_EVERY_S = 60.0
_refusals_logged: dict[str, float] = {}


def origin_allowed(websocket: WebSocket, allowed: tuple[str, ...]) -> bool:
    """Whether a WebSocket upgrade's Origin may connect; a refusal is logged with the setting
    that would allow it."""
    origin = websocket.headers.get("origin")
    if origin is None or "*" in allowed:
        return True
    if allowed:
        if _normal(origin) in {_normal(item) for item in allowed}:
            return True
        now_allowed = f"LIVECODE_ALLOWED_ORIGINS={','.join(allowed)}"
    else:
        host = websocket.headers.get("host", "")
        if urlsplit(origin).netloc.lower() == host.lower():
            return True
        now_allowed = f"LIVECODE_ALLOWED_ORIGINS unset: only pages of this host ({host})"
    _log_refusal(origin, now_allowed)
    return False


def cors_middleware(allowed: tuple[str, ...]) -> Middleware:
    """Starlette's CORSMiddleware for the same origins as the WebSocket's.

    Unset, it allows no other origin: a page of this host needs no CORS. Preflights are
    answered before the key check (they carry no Authorization header).
    """
    return Middleware(
        CORSMiddleware,
        allow_origins=["*"] if "*" in allowed else [_normal(origin) for origin in allowed],
        allow_methods=CORS_METHODS,
        allow_headers=CORS_HEADERS,
        expose_headers=["Retry-After"],
        max_age=CORS_MAX_AGE_S,
    )


class SecurityHeaders:
    """ASGI middleware: DEFAULT_SECURITY_HEADERS on every HTTP answer, except the ones an
    answer sets itself (the Swagger UI page and the playground have their own policies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in DEFAULT_SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def inline_script_csp(script: str) -> str:
    """The CSP source that allows exactly this inline script and no other ('sha256-…')."""
    digest = hashlib.sha256(script.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def _normal(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _log_refusal(origin: str, now_allowed: str) -> None:
    now = time.monotonic()
    if now - _refusals_logged.get(origin, float("-inf")) < REFUSAL_LOG_EVERY_S:
        return
    if len(_refusals_logged) > 1000:
        _refusals_logged.clear()
    _refusals_logged[origin] = now
    logger.warning(
        "WebSocket upgrade from Origin %r refused (403): %s; add it to LIVECODE_ALLOWED_ORIGINS "
        "(comma-separated) to allow it",
        origin,
        now_allowed,
    )
