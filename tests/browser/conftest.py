"""A real Chromium (Debian's /usr/bin/chromium) on the playground, driven by Playwright.

Nothing here downloads a browser: Playwright launches the system's Chromium, and without it
the tests skip (fail under CI). Each test gets a fresh browser context; at its end the page is
saved as a screenshot in tests/browser/artifacts/<test>.png (a page is judged by what a person
sees), and any Content-Security-Policy violation or uncaught error on the page fails it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.browser.pages import ARTIFACTS, CHROMIUM, TIMEOUT_MS, launch_chromium
from tests.utils import LiveServer, embedded_settings, missing_service, run_server

# Runs before the page's own scripts (injected by the browser, so the page's CSP allows it):
# records CSP violations and uncaught errors for the fixture to check.
_WATCH_PAGE = """
window.__problems = [];
document.addEventListener("securitypolicyviolation", (event) => {
  // Chromium's own contenteditable editing (text inserted as by an IME, as insert_text does)
  // tries a style attribute on the editor's line, which CodeMirror redraws anyway: not ours.
  const inEditor = event.target && event.target.closest && event.target.closest(".cm-content");
  if (event.violatedDirective === "style-src-attr" && inEditor) return;
  const where = event.target && event.target.outerHTML ? event.target.outerHTML.slice(0, 120) : "";
  window.__problems.push(`CSP ${event.violatedDirective} ${event.blockedURI} ${where}`);
});
window.addEventListener("error", (event) => window.__problems.push(`error ${event.message}`));
window.addEventListener("unhandledrejection", (event) => {
  window.__problems.push(`unhandled rejection ${JSON.stringify(event.reason)}`);
});
"""

expect.set_options(timeout=TIMEOUT_MS)


# Package scope, not session: between its calls sync Playwright marks its event loop as this
# thread's running loop, and the asyncio tests that run after this package could not start.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        missing_service(f"{CHROMIUM} is not installed (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def playground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """An embedded server (real sandbox) for the module's pages."""
    settings = embedded_settings(tmp_path_factory, runs_per_minute=1000)
    with run_server(settings) as server:
        yield server


@pytest.fixture
def new_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Callable[..., Page]]:
    """Open pages, each in a browser context of its own (another tab, another machine)."""
    contexts: list[BrowserContext] = []
    pages: list[Page] = []

    def open_page(**context_options: Any) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, **context_options)
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(_WATCH_PAGE)
        contexts.append(context)
        page = context.new_page()
        pages.append(page)
        return page

    yield open_page
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    problems = []
    for number, page in enumerate(pages):
        if page.is_closed():
            continue
        suffix = f"-{number + 1}" if len(pages) > 1 else ""
        page.screenshot(path=ARTIFACTS / f"{name}{suffix}.png")
        with contextlib.suppress(Exception):
            problems += page.evaluate("window.__problems || []")
    for context in contexts:
        context.close()
    assert problems == [], f"the page reported problems: {problems}"


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    return new_page()
