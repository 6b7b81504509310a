"""Connections that drop: the page resumes the output after what it showed, nothing lost or
shown twice (subscribe with `since`), and keeps its session."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import (
    SocketProxy,
    open_playground,
    set_source,
    snapshot,
    stream_text,
    wait_final,
    wait_saved,
)
from tests.utils import LiveServer, embedded_settings, free_port, run_server

LINES = 40
# One line every 0.1 s: a 4 s run, long enough to drop the connection in the middle.
NUMBERED_LINES = f"""\
import time
for i in range({LINES}):
    print(f"line {{i:03d}}")
    time.sleep(0.1)
"""
EXPECTED = "".join(f"line {i:03d}\n" for i in range(LINES))


def test_dropped_socket_resumes_the_output(page: Page, playground: LiveServer) -> None:
    """The page's socket closes mid-run; it reconnects and shows every line exactly once."""
    proxy = SocketProxy(page)
    open_playground(page, playground.url)
    set_source(page, NUMBERED_LINES)
    page.get_by_role("button", name="Run", exact=True).click()
    log = page.get_by_role("log", name="Output")
    expect(log).to_contain_text("line 005")

    proxy.drop()

    shown_at_drop = stream_text(page, "stdout")
    assert f"line {LINES - 1:03d}" not in shown_at_drop
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    wait_final(page)
    assert len(proxy.connections) == 2
    assert stream_text(page, "stdout") == EXPECTED
    _assert_stored_output_matches(page, playground.url)


def test_server_restart_mid_run(
    new_page: Callable[..., Page], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The server stops mid-run and comes back on its port: the page picks up where it was."""
    settings = embedded_settings(tmp_path_factory)
    port = free_port()
    page = new_page()
    with run_server(settings, port=port) as server:
        open_playground(page, server.url)
        set_source(page, NUMBERED_LINES)
        wait_saved(page)
        page.get_by_role("button", name="Run", exact=True).click()
        expect(page.get_by_role("log", name="Output")).to_contain_text("line 005")
    # Stopped: the running execution finished during the shutdown, stored in the database.
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
    snapshot(page, "server-restart-offline")
    assert f"line {LINES - 1:03d}" not in stream_text(page, "stdout")

    with run_server(settings, port=port) as server:
        expect(page.locator("#connection")).to_have_attribute("data-state", "open")
        wait_final(page)
        assert stream_text(page, "stdout") == EXPECTED
        _assert_stored_output_matches(page, server.url)
        wait_saved(page)


def test_reload_mid_run_follows_the_run(page: Page, playground: LiveServer) -> None:
    """A reload while the program runs shows its output from the start and goes on live."""
    open_playground(page, playground.url)
    set_source(page, NUMBERED_LINES)
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("log", name="Output")).to_contain_text("line 005")

    page.reload()

    expect(page.locator("html")).to_have_attribute("data-ready", "true")
    expect(page).to_have_url(re.compile(r"#/s/[\w-]+$"))
    wait_final(page)
    assert stream_text(page, "stdout") == EXPECTED


def _assert_stored_output_matches(page: Page, url: str) -> None:
    execution_id = page.locator("#runs .run-item").first.get_attribute("data-execution-id")
    stored = httpx.get(f"{url}/executions/{execution_id}").json()
    assert stored["status"] == "COMPLETED"
    assert stored["stdout"] == EXPECTED
