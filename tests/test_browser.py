"""The browser edge: the WebSocket Origin allowlist (refusals logged), CORS from the same list,
security headers, and forwarded headers believed only from the proxies configured."""

from __future__ import annotations

import logging

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.utils import LiveServer, embedded_settings, run_server, ws_connect

pytestmark = pytest.mark.anyio

HELLO = {"language": "python", "source_code": "print('hi')"}


async def test_a_refused_origin_is_logged_with_the_setting_that_allows_it(
    embedded_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """403 for a page of another site, and a log line naming its Origin and the variable."""
    caplog.set_level(logging.WARNING, logger="livecode.browser")
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(embedded_server, origin="https://refused.example"):
            pass
    assert refused.value.response.status_code == 403
    lines = [record.getMessage() for record in caplog.records]
    assert any(
        "'https://refused.example'" in line and "LIVECODE_ALLOWED_ORIGINS" in line for line in lines
    ), lines


async def test_allowed_origins_and_cors_share_one_list(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """LIVECODE_ALLOWED_ORIGINS lets those pages open /ws and call REST (CORS, preflight
    included); the server's own host no longer, and any other never."""
    allowed = "https://editor.example"
    settings = embedded_settings(tmp_path_factory, allowed_origins=(allowed,))
    with run_server(settings) as server:
        async with ws_connect(server, origin=allowed) as ws:
            assert (await ws.request({"type": "ping"}))["type"] == "pong"
        for refused in ("https://other.example", server.url):
            with pytest.raises(InvalidStatus):
                async with ws_connect(server, origin=refused):
                    pass
        preflight = httpx.options(
            f"{server.url}/executions",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == allowed
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        answer = httpx.get(f"{server.url}/languages", headers={"Origin": allowed})
        assert answer.headers["access-control-allow-origin"] == allowed
        other = httpx.get(f"{server.url}/languages", headers={"Origin": "https://other.example"})
        assert "access-control-allow-origin" not in other.headers


def test_security_headers(embedded_server: LiveServer) -> None:
    """/docs allows its own scripts and one inline script by hash, and no framing; every other
    answer (JSON, errors) loads nothing and may not be framed; nothing is sniffed."""
    with embedded_server.client() as client:
        docs = client.get("/docs").headers
        policy = docs["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self' 'sha256-" in policy
        assert "unsafe-eval" not in policy
        for path in ("/openapi.json", "/languages", "/health", "/nowhere"):
            headers = client.get(path).headers
            assert headers["content-security-policy"].startswith("default-src 'none'"), path
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"
        assert docs["x-content-type-options"] == "nosniff"


def test_forwarded_headers_are_ignored_from_proxies_not_named(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Without LIVECODE_FORWARDED_ALLOW_IPS, X-Forwarded-For changes nothing: every request
    counts against the one real address (here, its runs a minute)."""
    settings = embedded_settings(tmp_path_factory, allow_anonymous=True, tenant_runs_per_minute=2)
    with run_server(settings) as server, server.client() as client:
        for address in ("198.51.100.1", "198.51.100.2"):
            headers = {"X-Forwarded-For": address}
            assert client.post("/executions", json=HELLO, headers=headers).status_code == 202
        refused = client.post("/executions", json=HELLO, headers={"X-Forwarded-For": "192.0.2.9"})
        assert refused.status_code == 429
