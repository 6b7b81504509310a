"""The playground at / (issue 12): the editor page and its files, served from the package.

`livecode/static/playground/` holds the page (`index.html`, `playground.css`, `theme.js`,
written by hand) and `app.js` with `app.css` (xterm.js's stylesheet), built from `web/` with one
command (README, "Playground") and committed, so that a Python-only install serves it with
nothing fetched from elsewhere.

Each file is read and gzipped once. The page names its files with `?v=<version>` (a hash of
them all), so a file asked for at the current version is cached for good and any other answer
is revalidated with its ETag. Every answer carries the security headers: the page runs no
inline script, connects only to this server and may not be framed. Its inline styles are the
style elements CodeMirror and xterm.js add, allowed by a nonce made for each page load (so the
page itself is never cached); style attributes stay blocked. /docs keeps its own headers (its
Swagger UI starts with an inline script).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

STATIC_DIR = Path(__file__).parent / "static" / "playground"
FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
    "theme.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "THIRD_PARTY_LICENSES.txt": "text/plain; charset=utf-8",
}
INDEX = "index.html"
# Below this a gzip body saves nothing worth a header.
GZIP_MIN_BYTES = 512
# What a Host header may hold to be named in the policy (host, IPv4, [IPv6], port).
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]+)?|\[[0-9A-Fa-f:.]+\](:[0-9]+)?")
CACHE_FOREVER = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
NO_STORE = "no-store"


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    gzipped: bytes | None
    etag: str
    media_type: str


def security_headers(host: str, style_nonce: str | None = None) -> dict[str, str]:
    """The headers of every playground answer; `host` is the one the page connects back to."""
    sockets = f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            # CodeMirror and xterm.js add style elements, given the nonce (web/src/terminal.js).
            f"style-src 'self' 'nonce-{style_nonce}'" if style_nonce else "style-src 'self'",
            "img-src 'self'",
            # 'self' covers ws: and wss: in CSP 3; the hosts are for browsers before it.
            f"connect-src 'self'{sockets}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }


async def index(request: Request) -> Response:
    """GET /: the page, with a fresh style nonce."""
    nonce = secrets.token_urlsafe(18)
    page = _file(_page().replace("{{nonce}}", nonce).encode(), "text/html; charset=utf-8")
    return _answer(request, page, cache=NO_STORE, style_nonce=nonce)


async def static_file(request: Request) -> Response:
    """GET /static/playground/{name}: one of the page's files."""
    name = request.path_params["name"]
    if name not in FILES:
        raise HTTPException(404, f"no playground file {name!r}")
    current = request.query_params.get("v") == asset_version()
    return _answer(request, _files()[name], cache=CACHE_FOREVER if current else REVALIDATE)


@functools.cache
def asset_version() -> str:
    """A hash of every file the page loads: it changes whenever one of them does."""
    digest = hashlib.sha256()
    for name in sorted(FILES):
        digest.update(_files()[name].body)
    return digest.hexdigest()[:16]


@functools.cache
def _files() -> dict[str, _File]:
    return {name: _file((STATIC_DIR / name).read_bytes(), kind) for name, kind in FILES.items()}


@functools.cache
def _page() -> str:
    return (STATIC_DIR / INDEX).read_text("utf-8").replace("{{version}}", asset_version())


def _file(body: bytes, media_type: str) -> _File:
    # mtime=0: the same bytes on every start, so the gzip ETag stays valid across restarts.
    gzipped = gzip.compress(body, 9, mtime=0) if len(body) >= GZIP_MIN_BYTES else None
    etag = hashlib.sha256(body).hexdigest()[:20]
    return _File(body, gzipped, etag, media_type)


def _answer(
    request: Request, file: _File, *, cache: str, style_nonce: str | None = None
) -> Response:
    use_gzip = file.gzipped is not None and "gzip" in request.headers.get("accept-encoding", "")
    etag = f'"{file.etag}-gz"' if use_gzip else f'"{file.etag}"'
    headers = {
        **security_headers(request.headers.get("host", ""), style_nonce),
        "Cache-Control": cache,
        "ETag": etag,
        "Vary": "Accept-Encoding",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if use_gzip:
        assert file.gzipped is not None
        headers["Content-Encoding"] = "gzip"
        return Response(file.gzipped, media_type=file.media_type, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


routes = [
    Route("/", index, methods=["GET"]),
    Route("/static/playground/{name}", static_file, methods=["GET"]),
]
