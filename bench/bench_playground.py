"""The playground's speed, as a person in Chromium meets it.

Prints: what / loads (bytes gzipped on the wire and raw, per file), time to interactive (cold:
a fresh browser profile; warm: a reload with the files cached), keystroke to `saved` (the
autosave waits SAVE_DELAY_MS = 300 ms after the last keystroke; the rest is the round trip),
and a printed line to the page (a program prints its wall clock; the page notes when that
line enters the console, which it does in the next animation frame).

    python3 bench/bench_playground.py [--loads 10] [--keystrokes 30] [--lines 40]

The server is a separate `livecode serve` process (embedded mode, a temporary SQLite file, the
real sandbox) so that it does not share a GIL with Playwright; the browser is Debian's
/usr/bin/chromium, as in the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import html.parser
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx
from playwright.sync_api import Browser, Page, expect, sync_playwright

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SAVE_DELAY_MS = 300  # web/src/session.js
TIMEOUT_MS = 30_000

# Installed in the page: when each keystroke happened and when the save state became saved.
_WATCH_SAVES = """() => {
  window.__keys = [];
  window.__saves = [];
  document.addEventListener("keydown", () => window.__keys.push(performance.now()), true);
  const state = document.getElementById("save-state");
  new MutationObserver(() => {
    if (state.dataset.state === "saved") {
      window.__saves.push([performance.now(), Number(state.dataset.version)]);
    }
  }).observe(state, {attributes: true, childList: true, characterData: true, subtree: true});
}"""

# Installed in the page: the wall clock at which each printed line entered the console.
_WATCH_LINES = """() => {
  window.__seen = {};
  const output = document.getElementById("output");
  new MutationObserver(() => {
    const now = performance.timeOrigin + performance.now();
    for (const span of output.querySelectorAll('[data-stream="stdout"]')) {
      for (const line of span.textContent.split("\\n")) {
        if (line && !(line in window.__seen)) window.__seen[line] = now;
      }
    }
  }).observe(output, {childList: true, subtree: true, characterData: true});
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--keystrokes", type=int, default=30)
    parser.add_argument("--lines", type=int, default=40)
    args = parser.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"{CHROMIUM} is missing: apt-get install chromium")

    with serve() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        transfer(url)
        time_to_interactive(browser, url, args.loads)
        keystroke_to_saved(browser, url, args.keystrokes)
        print_to_page(browser, url, args.lines)
        browser.close()


def transfer(url: str) -> None:
    """What / loads, gzipped as served, against the 400 KB budget."""
    files = ["/"]
    page = _Links()
    page.feed(httpx.get(url).text)
    files += page.links
    print("transfer (gzip as served / raw):")
    wire_total = raw_total = 0
    for path in files:
        response = httpx.get(url + path, headers={"accept-encoding": "gzip"})
        wire = int(response.headers.get("content-length", len(response.content)))
        raw = len(response.content)
        if "content-encoding" not in response.headers:
            wire = raw
        wire_total += wire
        raw_total += raw
        print(f"  {path.split('?')[0]:<40} {wire / 1024:7.1f} KB  {raw / 1024:7.1f} KB")
    print(f"  {'total':<40} {wire_total / 1024:7.1f} KB  {raw_total / 1024:7.1f} KB")
    best = sum(len(gzip.compress(httpx.get(url + p).content, 9)) for p in files)
    print(f"  (gzip -9 of the same bytes: {best / 1024:.1f} KB; budget 400 KB)")


def time_to_interactive(browser: Browser, url: str, loads: int) -> None:
    """Navigation start to the page's `livecode-ready` mark (languages, socket, session)."""
    cold, warm, transferred = [], [], []
    for _ in range(loads):
        context = browser.new_context()
        page = context.new_page()
        cold.append(_load(page, url, reload=False))
        transferred.append(
            page.evaluate(
                "() => performance.getEntriesByType('navigation')[0].transferSize + "
                "performance.getEntriesByType('resource')"
                ".reduce((sum, entry) => sum + entry.transferSize, 0)"
            )
        )
        warm.append(_load(page, url, reload=True))
        context.close()
    print(f"time to interactive over {loads} loads (median, max):")
    print(f"  cold (empty cache)  {statistics.median(cold):6.0f} ms  {max(cold):6.0f} ms")
    print(f"  warm (reload)       {statistics.median(warm):6.0f} ms  {max(warm):6.0f} ms")
    print(f"  bytes a cold load transferred: {statistics.median(transferred) / 1024:.1f} KB")


def keystroke_to_saved(browser: Browser, url: str, keystrokes: int) -> None:
    """One keystroke, then the time until the page shows the new version as saved."""
    context = browser.new_context()
    page = context.new_page()
    _load(page, url, reload=False)
    editor = page.get_by_role("textbox", name="Source code")
    editor.click()
    page.keyboard.press("ControlOrMeta+End")
    page.keyboard.type("#")  # the first edit creates the session
    expect(page.locator("#save-state")).to_have_attribute("data-state", "saved")
    page.evaluate(_WATCH_SAVES)
    samples = []
    for number in range(keystrokes):
        version = number + 2
        page.keyboard.type("x")
        expect(page.locator("#save-state")).to_have_attribute("data-version", str(version))
        expect(page.locator("#save-state")).to_have_attribute("data-state", "saved")
        key_at = page.evaluate("() => window.__keys[window.__keys.length - 1]")
        saves = page.evaluate("() => window.__saves")
        saved_at = next(at for at, saved in saves if saved == version)
        samples.append(saved_at - key_at)
    context.close()
    p50 = statistics.median(samples)
    p90 = _percentile(samples, 0.9)
    print(f"keystroke to saved over {keystrokes} keystrokes (debounce {SAVE_DELAY_MS} ms):")
    past = p50 - SAVE_DELAY_MS
    print(f"  p50 {p50:6.1f} ms  p90 {p90:6.1f} ms  (p50 past the debounce {past:.1f} ms)")


def print_to_page(browser: Browser, url: str, lines: int) -> None:
    """A program prints its wall clock every 100 ms; when each line enters the console."""
    context = browser.new_context()
    page = context.new_page()
    _load(page, url, reload=False)
    source = (
        "import time\n"
        f"for i in range({lines}):\n"
        "    print(f'{time.time():.6f}', flush=True)\n"
        "    time.sleep(0.1)\n"
    )
    page.get_by_role("textbox", name="Source code").click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.insert_text(source)
    page.evaluate(_WATCH_LINES)
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("COMPLETED", timeout=TIMEOUT_MS)
    seen = page.evaluate("() => window.__seen")
    context.close()
    delays = [at - float(line) * 1000 for line, at in seen.items()]
    print(f"printed line to the page over {len(delays)} lines (a print every 100 ms):")
    print(
        f"  p50 {statistics.median(delays):6.1f} ms  p90 {_percentile(delays, 0.9):6.1f} ms  "
        f"max {max(delays):6.1f} ms"
    )


def _load(page: Page, url: str, *, reload: bool) -> float:
    if reload:
        page.reload()
    else:
        page.goto(url)
    expect(page.locator("html")).to_have_attribute("data-ready", "true", timeout=TIMEOUT_MS)
    return float(page.evaluate("() => performance.getEntriesByName('livecode-ready')[0].startTime"))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@contextlib.contextmanager
def serve() -> Iterator[str]:
    """`livecode serve` in embedded mode on a free port, with a database of its own."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECODE_")}
        env.update(
            LIVECODE_DATABASE_URL=f"sqlite:///{directory}/bench.db",
            LIVECODE_RUNS_PER_MINUTE="100000",
            LIVECODE_LOG_LEVEL="WARNING",
            PYTHONPATH=REPO,
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "livecode", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                time.sleep(0.05)
            yield url
        finally:
            process.terminate()
            process.wait(30)


class _Links(html.parser.HTMLParser):
    """The files a page names: scripts, style sheets, icons."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        link = named.get("src") if tag == "script" else named.get("href") if tag == "link" else None
        if link:
            self.links.append(link)


if __name__ == "__main__":
    main()
