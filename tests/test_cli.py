"""The `livecode` command as a new user meets it: its version, what `serve` prints, and how it
stops."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from websockets.exceptions import ConnectionClosed

from livecode import __version__
from livecode.config import Settings
from livecode.queue import HAND_BACK_S
from tests.utils import (
    REPO,
    TIMEOUT,
    LiveServer,
    free_port,
    livecode_env,
    run_process,
    wait_status,
    ws_connect,
)

# What a stopping server gives its running executions before handing them back.
GRACE_S = 1.0


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


@pytest.mark.anyio
async def test_sigterm_to_serve_hands_back_a_run_going_on_in_a_socket_command_thread(
    tmp_path: Path,
) -> None:
    """SIGTERM to an embedded `serve` while a socket's run sleeps: the process ends within
    the shutdown grace and the hand-back, the run is QUEUED again, and the next start runs it
    again as attempt 2. On an idle server the socket's command thread runs the run itself
    (queue.runs_after_reply), in a pool of non-daemon threads: the hand-back must cover it, or
    the run is left RUNNING (the sandbox's close still ends the program, so nothing holds the
    process at exit)."""
    port = free_port()
    database = f"sqlite:///{tmp_path / 'livecode.db'}"
    env = {
        "LIVECODE_DATABASE_URL": database,
        "LIVECODE_PORT": str(port),
        "LIVECODE_SHUTDOWN_GRACE_S": str(GRACE_S),
        "LIVECODE_LOG_LEVEL": "WARNING",
    }
    server = LiveServer(f"http://127.0.0.1:{port}", Settings.from_env(env))
    source = "import time\nprint('started', flush=True)\ntime.sleep(60)"
    with run_process(["serve"], env, ready_url=f"{server.url}/health") as process:
        async with ws_connect(server) as ws:
            created = await ws.request(
                {"type": "create", "language": "python", "source_code": source}
            )
            queued = await ws.request({"type": "run", "session_id": created["session"]["id"]})
            execution_id = queued["execution_id"]
            await ws.until("output", execution_id)
            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.until("finished", execution_id)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        # Once shut down, uvicorn raises the signal again: the status of a process it stopped.
        assert await asyncio.to_thread(process.wait, GRACE_S + HAND_BACK_S) == -signal.SIGTERM
    # Handed back, not left RUNNING (which the next start would take for a crash, and retry too).
    assert stored_state(database, execution_id) == ("QUEUED", 1)
    with run_process(["serve"], env, ready_url=f"{server.url}/health"), server.client() as client:
        wait_status(client, execution_id, "RUNNING")
        again = client.get(f"/executions/{execution_id}").json()
    assert (again["status"], again["attempt"]) == ("RUNNING", 2)


def stored_state(database: str, execution_id: str) -> tuple[str, int]:
    """An execution's status and attempt as its database holds them, no server running."""
    engine = sa.create_engine(database, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                sa.text("SELECT status, attempt FROM executions WHERE id = :id"),
                {"id": execution_id},
            ).one()
    finally:
        engine.dispose()
    return row[0], row[1]
