"""The page's session: its URL, autosave, two tabs on one session, reloads, past runs, looks."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from playwright.sync_api import Page, expect

from tests.browser.pages import (
    SocketProxy,
    editor_text,
    open_playground,
    run_and_wait,
    set_source,
    snapshot,
    stream_text,
    wait_saved,
)
from tests.utils import LiveServer


def test_what_people_and_tests_find_by_name(page: Page, playground: LiveServer) -> None:
    """The controls have the names the issue gives them; languages come with versions."""
    open_playground(page, playground.url)
    languages = httpx.get(f"{playground.url}/languages").json()

    picker = page.get_by_label("Language")
    assert picker.evaluate("e => e.tagName") == "SELECT"
    labels = picker.locator("option").all_inner_texts()
    assert labels == [f"{language['name']} {language['version']}" for language in languages]
    expect(page.get_by_role("textbox", name="Source code")).to_be_visible()
    expect(page.get_by_role("button", name="Run", exact=True)).to_be_enabled()
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    expect(page.get_by_role("log", name="Output")).to_be_visible()
    expect(page.get_by_label("Input", exact=True)).to_be_editable()
    expect(page.get_by_role("status")).to_have_text("Ready")
    # Nothing is stored until the person types or runs.
    expect(page.locator("#save-state")).to_have_attribute("data-state", "draft")
    expect(page).to_have_url(f"{playground.url}/")


def test_autosave_shows_saving_and_the_version(page: Page, playground: LiveServer) -> None:
    """Typing saves after a pause; the state shows the stored version."""
    open_playground(page, playground.url)
    set_source(page, "print(1)\n")
    wait_saved(page)
    state = page.locator("#save-state")
    expect(state).to_have_text("Saved · v1")
    session_id = page.url.rsplit("/", 1)[-1]

    page.keyboard.type("print(2)")
    expect(state).to_have_text("Saved · v2")
    stored = httpx.get(f"{playground.url}/code-sessions/{session_id}").json()
    assert stored["source_code"] == "print(1)\nprint(2)"
    assert stored["version"] == 2


def test_two_tabs_on_one_session_mirror_each_other(
    new_page: Callable[..., Page], playground: LiveServer
) -> None:
    """The session's URL on another machine shows the same source and follows it live."""
    first = new_page()
    open_playground(first, playground.url)
    set_source(first, "print('from the first tab')\n")
    wait_saved(first)
    second = new_page()
    open_playground(second, first.url)
    assert editor_text(second) == "print('from the first tab')\n"

    first.keyboard.type("print('typed in the first')")
    expect(second.locator(".cm-content")).to_contain_text("typed in the first")
    wait_saved(second)

    second.get_by_role("textbox", name="Source code").click()
    second.keyboard.press("ControlOrMeta+End")
    second.keyboard.type("\nprint('and in the second')")
    expect(first.locator(".cm-content")).to_contain_text("and in the second")
    wait_saved(first)
    wait_saved(second)
    assert editor_text(first) == editor_text(second)
    expect(first.locator("#save-state")).to_have_text(second.locator("#save-state").inner_text())


def test_edits_on_both_sides_at_once_show_a_conflict(
    new_page: Callable[..., Page], playground: LiveServer
) -> None:
    """Unsaved edits meeting another tab's save ask which to keep; keeping mine saves mine."""
    first = new_page()
    open_playground(first, playground.url)
    set_source(first, "x = 1\n")
    wait_saved(first)
    second = new_page()
    proxy = SocketProxy(second)
    open_playground(second, first.url)

    # The second tab's save is on its way (held) when the first tab's save lands.
    proxy.hold()
    second.get_by_role("textbox", name="Source code").click()
    second.keyboard.press("ControlOrMeta+End")
    second.keyboard.type("y = 2  # mine")
    state = second.locator("#save-state")
    expect(state).to_have_attribute("data-state", "saving")
    first.keyboard.type("z = 3  # theirs")
    wait_saved(first)
    expect(state).to_have_attribute("data-state", "conflict")
    expect(second.get_by_role("alert")).to_contain_text("changed elsewhere (version 2)")
    snapshot(second, "conflict-shown")
    proxy.release()  # refused: it was based on version 1
    expect(second.get_by_role("alert")).to_be_visible()

    second.get_by_role("button", name="Keep mine").click()

    expect(state).to_have_text("Saved · v3")
    expect(first.locator(".cm-content")).to_contain_text("# mine")
    assert "# theirs" not in editor_text(first)
    expect(second.get_by_role("alert")).to_be_hidden()


def test_reload_keeps_the_session(page: Page, playground: LiveServer) -> None:
    """After a reload the URL opens the same source, its runs listed."""
    open_playground(page, playground.url)
    set_source(page, "print('kept')\n")
    wait_saved(page)
    run_and_wait(page)
    url = page.url

    page.reload()
    expect(page.locator("html")).to_have_attribute("data-ready", "true")

    assert page.url == url
    assert editor_text(page) == "print('kept')\n"
    expect(page.locator("#save-state")).to_have_text("Saved · v1")
    expect(page.locator("#runs .run-item")).to_have_count(1)
    expect(page.get_by_role("log", name="Output")).to_contain_text("kept")
    expect(page.get_by_role("status")).to_contain_text("COMPLETED · exit 0")


def test_past_runs_can_be_opened(page: Page, playground: LiveServer) -> None:
    """Each past run of the session opens in the console, with its own URL."""
    open_playground(page, playground.url)
    set_source(page, "print('first run')\n")
    run_and_wait(page)
    set_source(page, "print('second run')\n")
    run_and_wait(page)
    runs = page.locator("#runs .run-item")
    expect(runs).to_have_count(2)

    runs.nth(1).click()  # newest first

    expect(page.get_by_role("log", name="Output")).to_contain_text("first run")
    assert stream_text(page, "stdout") == "first run\n"
    expect(page.get_by_role("status")).to_contain_text("COMPLETED · exit 0")
    expect(page).to_have_url(re.compile(r"#/s/[\w-]+/e/[\w-]+$"))
    opened = page.url
    page.reload()
    expect(page.get_by_role("log", name="Output")).to_contain_text("first run")
    assert page.url == opened


def test_another_language_is_another_session(page: Page, playground: LiveServer) -> None:
    """A session keeps its language: picking another starts a session with the same source."""
    open_playground(page, playground.url)
    set_source(page, "console.log(40 + 2)\n")
    wait_saved(page)
    python_url = page.url

    page.get_by_label("Language").select_option("javascript")
    wait_saved(page)

    assert page.url != python_url
    run_and_wait(page)
    assert stream_text(page, "stdout") == "42\n"
    page.go_back()
    expect(page.get_by_label("Language")).to_have_value("python")
    expect(page.locator(".cm-content")).to_contain_text("console.log(40 + 2)")


def test_light_and_dark(new_page: Callable[..., Page], playground: LiveServer) -> None:
    """The page follows the system's colour scheme, and the toggle overrides it."""
    page = new_page(color_scheme="dark")
    open_playground(page, playground.url)
    background = "getComputedStyle(document.body).backgroundColor"
    dark = page.evaluate(f"() => {background}")
    assert dark == "rgb(15, 17, 21)"

    toggle = page.get_by_role("button", name=re.compile("^Theme"))
    toggle.click()  # system -> light
    expect(toggle).to_have_attribute("aria-label", "Theme: light")
    assert page.evaluate(f"() => {background}") == "rgb(244, 245, 247)"
    page.reload()  # the choice is kept
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    page.get_by_role("button", name=re.compile("^Theme")).click()  # light -> dark
    set_source(page, "# dark\nprint('dark', 1)\n")
    run_and_wait(page)
    assert page.evaluate(f"() => {background}") == dark


def test_unknown_session_url_starts_a_draft(page: Page, playground: LiveServer) -> None:
    """A session URL that names nothing says so and leaves a new draft at /."""
    open_playground(page, f"{playground.url}/#/s/no-such-session")

    expect(page.get_by_role("log", name="Output")).to_contain_text(
        "Session no-such-session could not be opened"
    )
    expect(page).to_have_url(f"{playground.url}/")
    expect(page.locator("#save-state")).to_have_attribute("data-state", "draft")
    expect(page.locator(".cm-content")).to_contain_text("press Run")
