"""Distributed mode across processes: a worker's chunks reach a socket on another server."""

from __future__ import annotations

import datetime as dt

import pytest

from livecode.config import Settings
from tests.utils import (
    TIMEOUT,
    LiveServer,
    distributed_env,
    free_port,
    joined,
    outputs,
    run_process,
    wait_final,
    ws_connect,
)

pytestmark = pytest.mark.anyio


async def test_chunks_reach_a_socket_on_another_server_process(
    distributed_server: LiveServer,
) -> None:
    """Run on server A (this process); follow from server B (another process); worker is a third."""
    port = free_port()
    settings = distributed_server.settings
    assert settings.redis_url is not None
    env = {**distributed_env(settings.database_url, settings.redis_url), "LIVECODE_PORT": str(port)}
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


def test_queued_runs_spread_over_idle_workers(postgres_database: str, redis_url: str) -> None:
    """Two runs queued before any worker is up, two one-thread workers: they run side by side.

    A worker takes no more messages than it has threads: one that grabbed both would run them
    one after the other while the second worker sat idle.
    """
    import httpx
    import redis

    base, db = redis_url.rsplit("/", 1)
    own_redis = f"{base}/{int(db) % 15 + 1}"  # a broker queue no other test's worker reads
    client = redis.Redis.from_url(own_redis)
    client.flushdb()
    client.close()
    port = free_port()
    env = {
        **distributed_env(postgres_database, own_redis),
        "LIVECODE_PORT": str(port),
        "LIVECODE_WORKER_THREADS": "1",
    }
    url = f"http://127.0.0.1:{port}"
    # Long enough that one worker ready seconds before the other (a loaded machine) cannot
    # finish the first run and take the second too.
    source = "import time\ntime.sleep(8)\nprint('done')\n"
    with run_process(["serve"], env, ready_url=f"{url}/health"), httpx.Client(base_url=url) as http:
        ids = [
            http.post("/executions", json={"language": "python", "source_code": source}).json()[
                "execution_id"
            ]
            for _ in range(2)
        ]
        with run_process(["worker"], env), run_process(["worker"], env):
            # Two worker processes start, then each run sleeps 8 s.
            finals = [wait_final(http, execution_id, timeout=2 * TIMEOUT) for execution_id in ids]
    assert [final["stdout"] for final in finals] == ["done\n", "done\n"]
    starts = [dt.datetime.fromisoformat(final["started_at"]) for final in finals]
    ends = [dt.datetime.fromisoformat(final["finished_at"]) for final in finals]
    assert max(starts) < min(ends), "the second run waited for the first to finish"
