"""Helpers for driving the playground in Chromium: launch, load, type, run, read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from tests.utils import TIMEOUT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = TIMEOUT * 1000
ARTIFACTS = Path(__file__).parent / "artifacts"


def launch_chromium(playwright: Any) -> Browser:
    """Debian's Chromium, headless (never a browser Playwright would download)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)  # type: ignore[no-any-return]


def snapshot(page: Page, name: str) -> None:
    """A screenshot in the middle of a test (the fixture takes one at its end)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png")


def open_playground(page: Page, url: str) -> None:
    """Load a playground URL and wait until it is ready (languages, socket, session)."""
    page.goto(url)
    expect(page.locator("html")).to_have_attribute("data-ready", "true")


def set_source(page: Page, source: str) -> None:
    """Replace the editor's text, as a paste would."""
    editor = page.get_by_role("textbox", name="Source code")
    editor.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.insert_text(source)


def wait_saved(page: Page) -> None:
    expect(page.locator("#save-state")).to_have_attribute("data-state", "saved")


def editor_text(page: Page) -> str:
    """The editor's text, read from its lines (all of them are drawn for a short program)."""
    return "\n".join(page.locator(".cm-content .cm-line").all_text_contents())


def run_and_wait(page: Page, status: str = "COMPLETED") -> str:
    """Press Run and wait for the final line; returns the run's status text."""
    page.get_by_role("button", name="Run", exact=True).click()
    return wait_final(page, status)


def wait_final(page: Page, status: str = "COMPLETED") -> str:
    state = page.get_by_role("status")
    expect(state).to_have_attribute("data-kind", re.compile("ok|bad"))
    expect(state).to_contain_text(status)
    return state.inner_text()


def stream_text(page: Page, stream: str) -> str:
    """What the console shows of one stream, joined."""
    return "".join(page.locator(f'#output [data-stream="{stream}"]').all_text_contents())


class SocketProxy:
    """Stands between a page and /ws (Playwright's route_web_socket), installed before load.

    It forwards both ways, and on demand holds what the page sends (released in order later)
    or drops the connection, as a network or a restarting server would.
    """

    def __init__(self, page: Page) -> None:
        self.connections: list[tuple[WebSocketRoute, WebSocketRoute]] = []
        self.is_holding = False
        self.held: list[tuple[WebSocketRoute, str | bytes]] = []
        page.route_web_socket(re.compile(r"/ws$"), self._route)

    def hold(self) -> None:
        self.is_holding = True

    def release(self) -> None:
        self.is_holding = False
        for server, message in self.held:
            server.send(message)
        self.held.clear()

    def drop(self) -> None:
        """Close the page's current socket at both ends."""
        page_side, server_side = self.connections[-1]
        page_side.close(code=4000, reason="dropped by the test")
        server_side.close()

    def _route(self, page_side: WebSocketRoute) -> None:
        server_side = page_side.connect_to_server()

        def from_page(message: str | bytes) -> None:
            if self.is_holding:
                self.held.append((server_side, message))
            else:
                server_side.send(message)

        page_side.on_message(from_page)
        self.connections.append((page_side, server_side))
