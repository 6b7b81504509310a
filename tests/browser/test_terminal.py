"""Terminal runs (tty: true) in the page: xterm.js draws them, keystrokes and size go back."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.pages import open_playground, set_source, snapshot, wait_final
from tests.utils import LiveServer

PROGRESS_BAR = """\
import time
for percent in range(0, 101, 10):
    print(f"\\rprogress {percent:3d}% " + "#" * (percent // 10), end="", flush=True)
    time.sleep(0.05)
print("\\ndone")
"""
# prints the terminal's size at each SIGWINCH, and waits at a prompt
SIZE_ON_SIGWINCH = """\
import os, signal
signal.signal(signal.SIGWINCH, lambda *_: print('size', *os.get_terminal_size()))
input('ready ')
"""


def run_in_terminal(page: Page, source: str) -> None:
    """Put `source` in the editor, tick Terminal and press Run."""
    set_source(page, source)
    page.get_by_role("checkbox", name="Terminal").check()
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("region", name="Terminal")).to_be_visible()


def screen(page: Page) -> list[str]:
    """The terminal's rows as drawn (xterm's DOM renderer), trailing blanks dropped."""
    rows = page.locator("#terminal .xterm-rows > div").all_text_contents()
    lines = [row.replace("\xa0", " ").rstrip() for row in rows]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def expect_on_screen(page: Page, pattern: str) -> None:
    """Wait until a row of the terminal matches `pattern` whole."""
    expect(page.locator("#terminal .xterm-rows > div")).to_contain_text(
        [re.compile(pattern.replace(" ", "[ \xa0]"))]
    )


def starting_size(page: Page, server: LiveServer) -> tuple[str, str]:
    """The cols and rows of the latest execution of the page's session, as REST says them."""
    session_id = page.url.split("#/s/")[1].split("/")[0]
    with server.client() as client:
        execution = client.get(f"/executions/session/{session_id}").json()[0]
    return str(execution["cols"]), str(execution["rows"])


def test_progress_bar_updates_in_place(page: Page, playground: LiveServer) -> None:
    """A \\r progress bar leaves one line, its last state, on the screen; not one per update."""
    open_playground(page, playground.url)
    run_in_terminal(page, PROGRESS_BAR)

    wait_final(page)

    lines = screen(page)
    assert lines[:2] == ["progress 100% ##########", "done"], lines
    assert not any("progress  90%" in line for line in lines), lines
    expect(page.get_by_role("log", name="Output")).to_be_hidden()
    snapshot(page, "terminal-progress-bar")


def test_prompt_answered_by_typing(page: Page, playground: LiveServer) -> None:
    """input() waits; what is typed into the terminal (echoed by it) answers, Enter sends."""
    open_playground(page, playground.url)
    run_in_terminal(page, "import sys\nname = input('name? ')\nprint(f'hello {name}')\n")
    expect_on_screen(page, r"name\? ")
    expect(page.get_by_label("Send a line")).to_be_hidden()

    page.get_by_role("region", name="Terminal").click()
    page.keyboard.type("Ada")
    page.keyboard.press("Enter")

    wait_final(page)
    assert screen(page)[:2] == ["name? Ada", "hello Ada"], screen(page)


def test_program_sees_a_terminal_of_the_views_size(page: Page, playground: LiveServer) -> None:
    """isatty() is true, and the size the program reads first is the view's (sent in the run:
    the terminal has it before the program starts), not 80x24 and no SIGWINCH needed."""
    open_playground(page, playground.url)
    run_in_terminal(
        page,
        "import os, sys\nprint('size', *os.get_terminal_size())\n"
        "print('tty', sys.stdin.isatty(), sys.stdout.isatty())\n",
    )

    wait_final(page)

    terminal = page.get_by_role("region", name="Terminal")
    cols, rows = (int(terminal.get_attribute(name) or 0) for name in ("data-cols", "data-rows"))
    lines = screen(page)
    assert lines[:2] == [f"size {cols} {rows}", "tty True True"], lines
    assert (cols, rows) != (80, 24)


def test_ctrl_c_interrupts(page: Page, playground: LiveServer) -> None:
    """Ctrl-C typed into the terminal stops a program that would loop for minutes."""
    open_playground(page, playground.url)
    run_in_terminal(
        page,
        "import time\nprint('looping', flush=True)\n"
        "try:\n    time.sleep(600)\nexcept KeyboardInterrupt:\n    print('interrupted')\n",
    )
    expect_on_screen(page, r"looping")

    page.get_by_role("region", name="Terminal").click()
    page.keyboard.press("Control+c")

    wait_final(page)
    lines = screen(page)
    assert lines[:2] == ["looping", "^Cinterrupted"], lines  # the terminal echoes ^C


def test_colours_pass_the_pages_policy(page: Page, playground: LiveServer) -> None:
    """256 and 24-bit colours are drawn (xterm's inline colours go through CSSOM, not blocked)."""
    open_playground(page, playground.url)
    run_in_terminal(
        page, "print('\\x1b[38;5;34mgreen\\x1b[0m \\x1b[38;2;255;0;0mred\\x1b[0m plain')\n"
    )

    wait_final(page)

    assert screen(page)[0] == "green red plain"
    colour = page.locator("#terminal .xterm-rows span", has_text="red").evaluate(
        "e => getComputedStyle(e).color"
    )
    assert colour == "rgb(255, 0, 0)"


def test_a_smaller_view_resizes_the_programs_terminal(page: Page, playground: LiveServer) -> None:
    """When the window shrinks, the program gets SIGWINCH and the view's new size."""
    open_playground(page, playground.url)
    run_in_terminal(page, SIZE_ON_SIGWINCH)
    expect_on_screen(page, r"ready ")
    terminal = page.get_by_role("region", name="Terminal")
    before = terminal.get_attribute("data-cols")

    page.set_viewport_size({"width": 960, "height": 640})

    expect(terminal).not_to_have_attribute("data-cols", before or "")
    cols, rows = (terminal.get_attribute(name) for name in ("data-cols", "data-rows"))
    expect_on_screen(page, rf"size {cols} {rows}")
    terminal.click()
    page.keyboard.press("Enter")
    wait_final(page)
    snapshot(page, "terminal-resized")


def test_a_reload_shows_a_tty_run_in_the_terminal(page: Page, playground: LiveServer) -> None:
    """The latest run was a tty one: after a reload it is replayed into the terminal again."""
    open_playground(page, playground.url)
    run_in_terminal(page, PROGRESS_BAR)
    wait_final(page)

    page.reload()
    expect(page.locator("html")).to_have_attribute("data-ready", "true")

    wait_final(page)
    expect(page.get_by_role("region", name="Terminal")).to_be_visible()
    assert screen(page)[:2] == ["progress 100% ##########", "done"], screen(page)


def test_a_reload_shows_a_tty_run_at_the_size_its_program_started_with(
    page: Page, playground: LiveServer
) -> None:
    """A tty run opened again is drawn at its starting size (the execution's cols and rows),
    the size its output was written for, not at the size of a wider window since."""
    page.set_viewport_size({"width": 960, "height": 640})
    open_playground(page, playground.url)
    run_in_terminal(page, "print('#' * 70)\n")
    wait_final(page)
    cols, rows = starting_size(page, playground)
    assert int(cols) < 70, cols  # the run's line wrapped in the narrow window
    terminal = page.get_by_role("region", name="Terminal")
    page.set_viewport_size({"width": 1600, "height": 900})
    expect(terminal).not_to_have_attribute("data-cols", cols)  # a finished run's view follows

    page.reload()
    expect(page.locator("html")).to_have_attribute("data-ready", "true")

    wait_final(page)
    expect(terminal).to_have_attribute("data-cols", cols)
    expect(terminal).to_have_attribute("data-rows", rows)
    assert screen(page)[:2] == ["#" * int(cols), "#" * (70 - int(cols))], screen(page)
    # the view around the smaller grid has the terminal's background, not xterm's black
    background = "e => getComputedStyle(e).backgroundColor"
    around = page.locator("#terminal .xterm-viewport").evaluate(background)
    assert around == terminal.evaluate(background) != "rgb(0, 0, 0)", around


def test_a_reload_gives_a_running_tty_run_the_size_it_is_drawn_at(
    page: Page, playground: LiveServer
) -> None:
    """A tty run still going on when the page is reloaded is drawn at its starting size, and its
    program gets that size too (with `resize`), so what it draws next fits the view."""
    page.set_viewport_size({"width": 960, "height": 640})
    open_playground(page, playground.url)
    run_in_terminal(page, SIZE_ON_SIGWINCH)
    expect_on_screen(page, r"ready ")
    cols, rows = starting_size(page, playground)
    terminal = page.get_by_role("region", name="Terminal")
    page.set_viewport_size({"width": 1600, "height": 900})
    expect(terminal).not_to_have_attribute("data-cols", cols)
    wider = terminal.get_attribute("data-cols")
    expect_on_screen(page, rf"size {wider} \d+")  # a run started here follows the view

    page.reload()
    expect(page.locator("html")).to_have_attribute("data-ready", "true")

    expect(terminal).to_have_attribute("data-cols", cols)
    expect(terminal).to_have_attribute("data-rows", rows)
    expect_on_screen(page, rf"size {cols} {rows}")
    terminal.click()
    page.keyboard.press("Enter")
    wait_final(page)
