"""The `livecode` command as a new user meets it: its version, and what `serve` prints."""

from __future__ import annotations

import contextlib
import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from livecode import __version__
from tests.utils import REPO, TIMEOUT, free_port, livecode_env


def test_version_is_the_installed_package_version() -> None:
    """`livecode --version` prints the version pip installed."""
    printed = subprocess.run(
        [sys.executable, "-m", "livecode", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=TIMEOUT,
    ).stdout
    assert printed.strip() == f"livecode {importlib.metadata.version('livecode')}"


@contextlib.contextmanager
def serving(tmp_path: Path) -> Iterator[tuple[list[str], int]]:
    """`livecode serve` on its embedded default in tmp_path; yields the 6 lines it printed."""
    port = free_port()
    database = f"sqlite:///{tmp_path / 'livecode.db'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "livecode", "serve"],
        env=livecode_env({"LIVECODE_DATABASE_URL": database, "LIVECODE_PORT": str(port)}),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield [process.stdout.readline() for _ in range(6)], port
    finally:
        process.terminate()
        process.wait(TIMEOUT)


def test_serve_prints_where_to_go_next(tmp_path: Path) -> None:
    """Once it listens, `serve` prints the URLs of the playground, the API docs and the WebSocket, and they work."""
    with serving(tmp_path) as (lines, port):
        base = f"http://127.0.0.1:{port}"
        assert lines[0].rstrip() == f"livecode {__version__} is serving on {base}"
        urls = {line.split()[-1] for line in lines[1:]}
        assert {
            f"{base}/",
            f"{base}/docs",
            f"{base}/openapi.json",
            f"ws://127.0.0.1:{port}/ws",
        } <= urls
        playground = httpx.get(f"{base}/", timeout=TIMEOUT)
        assert playground.status_code == 200 and 'role="log" aria-label="Output"' in playground.text
        docs = httpx.get(f"{base}/docs", timeout=TIMEOUT)
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        assert httpx.get(f"{base}/health/ready", timeout=TIMEOUT).status_code == 200
