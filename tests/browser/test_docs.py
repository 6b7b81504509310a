"""/docs in a real Chromium: Swagger UI runs under its Content-Security-Policy (issue 11)."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.utils import LiveServer


def test_swagger_ui_runs_under_its_policy(
    new_page: Callable[..., Page], playground: LiveServer
) -> None:
    """The page draws the document's operations, and the browser reports no CSP violation
    (the fixture fails the test on any): its inline script is allowed by hash, nothing else."""
    page = new_page()
    answer = page.goto(f"{playground.url}/docs")
    assert (
        answer is not None and "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    )
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("livecode")
    expect(page.locator(".opblock-summary-path", has_text="/code-sessions").first).to_be_visible()
