"""Quotas per tenant: runs a minute, executions running and queued at once, sessions; per key
(defaults from LIVECODE_TENANT_*, overridden per key) and per client address without keys."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from livecode.config import Settings
from tests.utils import (
    LiveServer,
    create_key,
    distributed_env,
    embedded_settings,
    private_redis_url,
    revoke_keys,
    run_process,
    run_server,
    wait_final,
    wait_status,
    wait_until,
    wait_until_http_ok,
    ws_connect,
)

pytestmark = pytest.mark.anyio

HELLO = {"language": "python", "source_code": "print('hi')"}
# Stays RUNNING until it is sent a line.
WAITS = {"language": "python", "source_code": "print(input())", "interactive": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Two worker threads; defaults of 5 runs a minute, 2 running, 3 queued, 3 sessions."""
    settings = embedded_settings(
        tmp_path_factory,
        tenant_runs_per_minute=5,
        tenant_max_running=2,
        tenant_max_queued=3,
        tenant_max_sessions=3,
    )
    with run_server(settings) as live:
        yield live


@pytest.fixture(scope="module")
def quiet_distributed_server(postgres_database: str) -> Iterator[LiveServer]:
    """A server and a `livecode worker` on a Redis database of their own (emptied first): no
    message other test modules left queued takes the worker threads this test counts on."""
    redis_url = f"{private_redis_url()}/2"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    env = distributed_env(postgres_database, redis_url)
    with run_process(["worker"], env), run_server(Settings.from_env(env)) as live:
        wait_until_http_ok(f"{live.url}/health/workers")
        yield live


def _rate_limited(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.json()["error"]["code"] == "rate_limited"
    assert int(answer.headers["Retry-After"]) >= 1


async def test_runs_a_minute_count_every_way_of_running(server: LiveServer) -> None:
    """A key's runs a minute count session runs, one-shot runs and WebSocket runs alike; the
    next one is 429 with Retry-After; another key is not held back by it."""
    key = create_key(server.settings.database_url, "rpm", runs_per_minute=3)
    other = create_key(server.settings.database_url, "rpm-other")
    with server.client(key) as client:
        session = client.post("/code-sessions", json=HELLO).json()
        assert client.post(f"/code-sessions/{session['id']}/run").status_code == 202
        assert client.post("/executions", json=HELLO).status_code == 202
        async with ws_connect(server, key) as ws:
            queued = await ws.request({"type": "run", "session_id": session["id"]})
            assert queued["type"] == "queued"
            refused = await ws.request({"type": "run", "session_id": session["id"]})
            assert refused["code"] == "rate_limited" and refused["retry_after"] >= 1
        _rate_limited(client.post("/executions", json=HELLO))
        _rate_limited(client.post(f"/code-sessions/{session['id']}/run"))
    with server.client(other) as client:
        assert client.post("/executions", json=HELLO).status_code == 202


@pytest.mark.parametrize("mode", ["embedded", "distributed"])
def test_running_and_queued_at_once(
    server: LiveServer, mode: str, request: pytest.FixtureRequest
) -> None:
    """With 1 running at once and 2 queued, a key's second and third runs wait in the queue
    while another key's run goes by them; a fourth is 429. When the first ends, one of them
    starts. (Distributed: the held ones go back to Redis with a delay.)"""
    if mode == "distributed":
        server = request.getfixturevalue("quiet_distributed_server")
    key = create_key(server.settings.database_url, f"busy-{mode}", max_running=1, max_queued=2)
    other = create_key(server.settings.database_url, f"busy-other-{mode}")
    try:
        _run_past_a_busy_tenant(server, key, other)
    finally:
        # The distributed database serves the whole test session: leave it without keys.
        revoke_keys(server.settings.database_url, f"busy-{mode}", f"busy-other-{mode}")


def _run_past_a_busy_tenant(server: LiveServer, key: str, other: str) -> None:
    with server.client(key) as client, server.client(other) as bystander:
        first = client.post("/executions", json=WAITS).json()["execution_id"]
        wait_status(client, first, "RUNNING")
        held = [client.post("/executions", json=WAITS).json()["execution_id"] for _ in range(2)]
        _rate_limited(client.post("/executions", json=HELLO))
        # Two worker threads, one free: the other key's run is not stuck behind the held ones.
        passing = bystander.post("/executions?wait=true", json=HELLO).json()
        assert passing["status"] == "COMPLETED" and passing["stdout"] == "hi\n"
        assert [client.get(f"/executions/{e}").json()["status"] for e in held] == ["QUEUED"] * 2
        client.post(f"/executions/{first}/cancel")
        # One of the held ones starts (which one first is not promised), the other still waits.

        def statuses() -> list[str] | None:
            found = sorted(client.get(f"/executions/{e}").json()["status"] for e in held)
            return found if "RUNNING" in found else None

        assert wait_until(statuses, "a held execution is RUNNING") == ["QUEUED", "RUNNING"]
        for execution_id in held:
            client.post(f"/executions/{execution_id}/cancel")
            wait_final(client, execution_id)


def test_the_environment_sets_the_defaults(server: LiveServer) -> None:
    """A key without overrides gets LIVECODE_TENANT_MAX_RUNNING (2) at once."""
    key = create_key(server.settings.database_url, "defaults", runs_per_minute=100)
    with server.client(key) as client:
        running = [client.post("/executions", json=WAITS).json()["execution_id"] for _ in range(2)]
        for execution_id in running:
            wait_status(client, execution_id, "RUNNING")
        third = client.post("/executions", json=WAITS).json()["execution_id"]
        client.post(f"/executions/{running[0]}/cancel")
        wait_status(client, third, "RUNNING")
        for execution_id in (running[1], third):
            client.post(f"/executions/{execution_id}/cancel")
            wait_final(client, execution_id)


async def test_sessions_held(server: LiveServer) -> None:
    """A key holds at most its sessions (REST and WebSocket alike); deleting one frees a place."""
    key = create_key(server.settings.database_url, "hoarder", max_sessions=2)
    with server.client(key) as client:
        first = client.post("/code-sessions", json=HELLO).json()
        async with ws_connect(server, key) as ws:
            assert (await ws.request({"type": "create", **HELLO}))["type"] == "created"
            refused = await ws.request({"type": "create", **HELLO})
            assert refused["code"] == "rate_limited"
        _rate_limited(client.post("/code-sessions", json=HELLO))
        assert client.delete(f"/code-sessions/{first['id']}").status_code == 204
        assert client.post("/code-sessions", json=HELLO).status_code == 201


def test_without_keys_each_client_address_is_held_to_the_quotas(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """LIVECODE_ALLOW_ANONYMOUS: each address (behind a proxy named in
    LIVECODE_FORWARDED_ALLOW_IPS, the one it forwards for) has its own runs a minute."""
    settings = embedded_settings(
        tmp_path_factory,
        allow_anonymous=True,
        forwarded_allow_ips=("127.0.0.1",),
        tenant_runs_per_minute=2,
    )
    with run_server(settings) as server, server.client() as client:
        one = {"X-Forwarded-For": "198.51.100.1"}
        two = {"X-Forwarded-For": "198.51.100.2"}
        for _ in range(2):
            assert client.post("/executions", json=HELLO, headers=one).status_code == 202
        _rate_limited(client.post("/executions", json=HELLO, headers=one))
        assert client.post("/executions", json=HELLO, headers=two).status_code == 202


def test_on_loopback_without_keys_no_quota_applies(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The machine's own clients, without keys, are held only to the per-session limits."""
    settings = embedded_settings(tmp_path_factory, tenant_runs_per_minute=5)
    with run_server(settings) as server, server.client() as client:
        for _ in range(7):  # more than the tenant default of 5 a minute
            assert client.post("/executions", json=HELLO).status_code == 202
