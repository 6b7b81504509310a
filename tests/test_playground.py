"""The playground's HTTP side: the page, its files, their headers, and the built asset."""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import html.parser
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from livecode import playground
from tests.utils import REPO, LiveServer

WEB = Path(REPO) / "web"


@pytest.fixture
def client(embedded_server: LiveServer) -> Iterator[httpx.Client]:
    with embedded_server.client() as client:
        yield client


def test_page_has_the_security_headers(client: httpx.Client) -> None:
    """/ forbids inline script, framing and sniffing, and names the socket it may open."""
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = _policy(response.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["default-src"] == ["'none'"]
    assert f"ws://{client.base_url.netloc.decode()}" in policy["connect-src"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


def test_style_nonce_is_fresh_and_in_the_page(client: httpx.Client) -> None:
    """Each load gets its own style nonce, in the policy and in the page for CodeMirror."""
    nonces = []
    for _ in range(2):
        response = client.get("/")
        [nonce] = re.findall(r"'nonce-([\w-]+)'", response.headers["content-security-policy"])
        assert f'<meta name="csp-nonce" content="{nonce}">' in response.text
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


def test_page_has_no_inline_script(client: httpx.Client) -> None:
    """Every script is a file of this server; no element carries an event handler."""
    page = _Elements()
    page.feed(client.get("/").text)
    scripts = [attrs for tag, attrs in page.elements if tag == "script"]
    assert scripts and all(
        attrs.get("src", "").startswith("/static/playground/") for attrs in scripts
    )
    assert not [attrs for _, attrs in page.elements if any(name.startswith("on") for name in attrs)]
    version = playground.asset_version()
    assert f"/static/playground/app.js?v={version}" in [attrs["src"] for attrs in scripts]


def test_files_are_gzipped_cached_and_revalidated(client: httpx.Client) -> None:
    """app.js comes gzipped; at the page's version it is cached for good, else revalidated."""
    current = client.get(f"/static/playground/app.js?v={playground.asset_version()}")
    assert current.headers["content-encoding"] == "gzip"
    assert current.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert current.headers["x-content-type-options"] == "nosniff"
    assert current.headers["content-type"] == "text/javascript; charset=utf-8"
    plain = (playground.STATIC_DIR / "app.js").read_bytes()
    assert current.content == plain  # httpx undid the gzip

    stale = client.get("/static/playground/app.js?v=old")
    assert stale.headers["cache-control"] == "no-cache"
    again = client.get(
        "/static/playground/app.js", headers={"if-none-match": stale.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""

    raw = client.get("/static/playground/app.js", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert raw.content == plain
    assert len(gzip.compress(plain)) < 400_000


def test_unknown_file_is_not_found(client: httpx.Client) -> None:
    for path in ("/static/playground/../app.py", "/static/playground/index.html", "/static/x"):
        assert client.get(path).status_code == 404


def test_docs_keep_their_inline_script(client: httpx.Client) -> None:
    """Swagger UI at /docs starts with an inline script: its own policy allows that script (by
    its hash), not the playground's, which allows none."""
    response = client.get("/docs")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in policy and "nonce-" not in policy
    assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 200


def test_built_asset_matches_the_web_sources() -> None:
    """app.js was rebuilt after the last change to web/ (`npm --prefix web run build`)."""
    banner = (playground.STATIC_DIR / "app.js").read_text("utf-8").split("\n", 1)[0]
    match = re.search(r"sources sha256 ([0-9a-f]{64})", banner)
    assert match, banner
    assert match.group(1) == _web_sources_hash(), (
        "web/ changed since app.js was built: run `npm --prefix web ci && "
        "npm --prefix web run build` and commit livecode/static/playground/"
    )


def test_every_file_is_package_data() -> None:
    """A wheel carries the page and its files (nothing is built at install time)."""
    with open(Path(REPO) / "pyproject.toml", "rb") as file:
        patterns = tomllib.load(file)["tool"]["setuptools"]["package-data"]["livecode"]
    for name in [playground.INDEX, *playground.FILES]:
        path = f"static/playground/{name}"
        assert any(fnmatch.fnmatch(path, pattern) for pattern in patterns), path
        assert (playground.STATIC_DIR / name).is_file()


def _web_sources_hash() -> str:
    """The hash web/build.mjs writes into the banner: its inputs, by path, in order."""
    paths = ["build.mjs", "package.json", "package-lock.json"]
    paths += [p.relative_to(WEB).as_posix() for p in (WEB / "src").rglob("*") if p.is_file()]
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.encode() + b"\0")
        digest.update((WEB / path).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _policy(header: str) -> dict[str, list[str]]:
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


class _Elements(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))
