"""Distributed mode across processes: a worker's chunks reach a socket on another server."""

from __future__ import annotations

import pytest

from livecode.config import Settings
from tests.conftest import distributed_env
from tests.utils import LiveServer, free_port, joined, outputs, run_process, ws_connect

pytestmark = pytest.mark.anyio


async def test_chunks_reach_a_socket_on_another_server_process(
    distributed_server: LiveServer, postgres_database: str, redis_url: str
) -> None:
    """Run on server A (this process); follow from server B (another process); worker is a third."""
    port = free_port()
    env = {**distributed_env(postgres_database, redis_url), "LIVECODE_PORT": str(port)}
    other = LiveServer(f"http://127.0.0.1:{port}", Settings.from_env(env))
    source = "import time\nfor i in range(6):\n    print('beat', i)\n    time.sleep(0.2)\n"
    with run_process(["serve"], env, ready_url=f"{other.url}/health"):
        async with ws_connect(distributed_server) as runner_socket, ws_connect(other) as watcher:
            created = await runner_socket.request(
                {"type": "create", "language": "python", "source_code": source}
            )
            queued = await runner_socket.request(
                {"type": "run", "session_id": created["session"]["id"]}
            )
            execution_id = queued["execution_id"]
            await watcher.send({"type": "subscribe", "execution_id": execution_id})
            here = await runner_socket.until("finished", execution_id)
            there = await watcher.until("finished", execution_id)
    expected = "".join(f"beat {i}\n" for i in range(6))
    assert joined(here, "stdout") == joined(there, "stdout") == expected
    assert [e["seq"] for e in outputs(there)] == list(range(1, len(outputs(there)) + 1))
    assert there[-1]["status"] == "COMPLETED"
