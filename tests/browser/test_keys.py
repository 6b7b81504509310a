"""The playground on a server with API keys: it asks for one, says when it is wrong, runs with a
right one and keeps it in the browser (never in a URL) until forgotten."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from livecode import auth
from tests.browser.pages import run_and_wait, set_source, snapshot, stream_text, wait_final
from tests.utils import (
    LiveServer,
    create_key,
    embedded_settings,
    revoke_keys,
    run_server,
    wait_until,
)

KEY = auth.new_key()
WRONG_KEY = auth.new_key()
STORED = "livecode.apiKey"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """An embedded server that takes one key, KEY."""
    settings = embedded_settings(tmp_path_factory, api_keys=(KEY,), runs_per_minute=1000)
    with run_server(settings) as server:
        yield server


def urls_seen(page: Page) -> list[str]:
    """Every URL the page asks for from now on, its sockets' too."""
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda socket: urls.append(socket.url))
    return urls


def use_key(page: Page, key: str) -> None:
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Use key").click()


def test_the_page_asks_for_a_key_refuses_a_wrong_one_and_remembers_the_right_one(
    page: Page, keyed: LiveServer
) -> None:
    """Prompt, wrong key (a clear message, nothing kept), right key (a program runs), reload
    (still signed in, the run shown again); the key is in no URL."""
    urls = urls_seen(page)
    page.goto(keyed.url)
    key_field = page.get_by_label("API key", exact=True)
    expect(key_field).to_be_visible()
    expect(page.get_by_role("form", name="API key needed")).to_contain_text(
        "This server needs an API key."
    )
    expect(page.locator("#connection")).to_have_text("API key needed")
    snapshot(page, "keys-prompt")

    use_key(page, WRONG_KEY)

    expect(page.get_by_role("alert")).to_have_text(
        "Unknown or revoked API key. Check the key, or ask for a new one."
    )
    expect(key_field).to_be_visible()
    assert page.evaluate(f"localStorage.getItem('{STORED}')") is None
    snapshot(page, "keys-wrong")

    use_key(page, KEY)

    expect(key_field).to_be_hidden()
    expect(page.locator("#connection")).to_have_text("Connected")
    expect(page.get_by_label("Language")).to_contain_text("Python 3")
    set_source(page, "print('hello with a key')")
    run_and_wait(page)
    assert stream_text(page, "stdout") == "hello with a key\n"
    assert page.evaluate(f"localStorage.getItem('{STORED}')") == KEY

    page.reload()

    expect(page.locator("html")).to_have_attribute("data-ready", "true")
    expect(page.locator("#connection")).to_have_text("Connected")
    expect(key_field).to_be_hidden()
    wait_final(page)  # the session's latest run, read with the key
    assert stream_text(page, "stdout") == "hello with a key\n"
    expect(page.get_by_role("button", name="Forget key")).to_be_visible()
    assert not [url for url in urls if KEY in url or WRONG_KEY in url], urls


def test_a_stored_key_refused_or_forgotten_brings_the_prompt_back(
    page: Page, keyed: LiveServer
) -> None:
    """A kept key the server does not take is named refused and dropped; Forget key drops a
    good one, and the prompt comes back."""
    page.goto(keyed.url)
    page.evaluate(f"localStorage.setItem('{STORED}', '{WRONG_KEY}')")
    page.reload()

    expect(page.get_by_role("form", name="API key needed")).to_contain_text(
        "The server refused the API key."
    )
    expect(page.get_by_role("alert")).to_contain_text("Unknown or revoked API key")
    assert page.evaluate(f"localStorage.getItem('{STORED}')") is None

    use_key(page, KEY)
    expect(page.locator("#connection")).to_have_text("Connected")
    page.get_by_role("button", name="Forget key").click()

    expect(page.get_by_label("API key", exact=True)).to_be_visible()
    expect(page.get_by_role("alert")).to_be_hidden()
    expect(page.locator("#connection")).to_have_text("API key needed")
    assert page.evaluate(f"localStorage.getItem('{STORED}')") is None


def test_a_key_revoked_while_the_page_is_open_is_asked_for_again(
    page: Page, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The socket's next message after a revocation is refused with 4401 (no REST call on the
    way): the page says the key was revoked and asks for one."""
    settings = embedded_settings(tmp_path_factory)
    key = create_key(settings.database_url, "dora")
    with run_server(settings) as server, server.client(key) as client:
        page.goto(server.url)
        use_key(page, key)
        expect(page.locator("#connection")).to_have_text("Connected")
        set_source(page, "print('before')")
        run_and_wait(page)

        revoke_keys(settings.database_url, "dora")
        wait_until(
            lambda: client.get("/languages").status_code == 401,
            "the server refuses the revoked key",
            timeout=auth.KEY_CACHE_TTL_S + 2,
        )
        set_source(page, "print('after')")  # autosaved over the socket

        expect(page.get_by_role("alert")).to_have_text(
            "This API key was revoked. Check the key, or ask for a new one."
        )
        expect(page.locator("#connection")).to_have_text("API key needed")
        expect(page.get_by_label("API key", exact=True)).to_be_visible()
        assert page.evaluate(f"localStorage.getItem('{STORED}')") is None
