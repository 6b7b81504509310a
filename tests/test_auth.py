"""API keys: the CLI that makes them, the one check at every edge, anonymous loopback, audit."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from livecode import auth, cli
from livecode.config import ConfigError, Settings
from livecode.store import Store
from tests.utils import (
    TIMEOUT,
    LiveServer,
    bearer,
    create_key,
    embedded_settings,
    run_server,
    wait_until,
    ws_connect,
)

pytestmark = pytest.mark.anyio

HELLO = {"language": "python", "source_code": "print('hi')"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """An embedded server with one key, alice's."""
    settings = embedded_settings(tmp_path_factory)
    key = create_key(settings.database_url, "alice")
    with run_server(settings) as server:
        yield server, key


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_keys_cli_shows_a_key_once_and_keeps_only_its_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """keys create prints the key once; the store holds its SHA-256 and prefix, list shows
    name, prefix, dates and limits (own ones starred), never the key."""
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    monkeypatch.setenv("LIVECODE_DATABASE_URL", url)
    code, out, err = _cli(capsys, "keys", "create", "alice", "--runs-per-minute", "30")
    key = out.strip()
    assert code == 0 and key.startswith("lc_") and len(key) == 43 and "once" in err
    code, listing, _ = _cli(capsys, "keys", "list")
    assert code == 0 and "alice" in listing and key[:11] + "…" in listing and key not in listing
    assert "30*" in listing and "never" in listing and "active" in listing
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        dump = "\n".join(str(row) for row in conn.execute(sa.text("SELECT * FROM api_keys")))
    engine.dispose()
    assert key not in dump and hashlib.sha256(key.encode()).hexdigest() in dump
    assert _cli(capsys, "keys", "create", "alice")[0] == 1  # names are never reused
    assert _cli(capsys, "keys", "create", "no spaces")[0] == 2
    code, out, _ = _cli(capsys, "keys", "set-limits", "alice", "--max-running", "2")
    assert code == 0 and "2*" in out and "30*" in out
    code, out, _ = _cli(capsys, "keys", "set-limits", "alice", "--runs-per-minute", "default")
    assert code == 0 and "30*" not in out
    code, out, _ = _cli(capsys, "keys", "revoke", "alice")
    assert code == 0 and "revoked" in out
    assert "revoked" in _cli(capsys, "keys", "list")[1]
    assert _cli(capsys, "keys", "revoke", "bob")[0] == 1


def test_rest_needs_a_key_except_on_public_paths(keyed: tuple[LiveServer, str]) -> None:
    """No key or a wrong one: 401 unauthorized with WWW-Authenticate; health, docs, OpenAPI
    need none; Bearer and X-Auth-Token both carry a key."""
    server, key = keyed
    with server.client() as client:
        for headers in ({}, bearer("lc_" + "x" * 40), bearer(key[:-1]), {"Authorization": key}):
            answer = client.post("/executions", json=HELLO, headers=headers)
            assert answer.status_code == 401, headers
            assert answer.json()["error"]["code"] == "unauthorized"
            assert answer.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/languages").status_code == 401
        for path in (
            "/health",
            "/health/db",
            "/docs",
            "/openapi.json",
            "/docs/static/swagger-ui.css",
        ):
            assert client.get(path).status_code == 200, path
        assert client.get("/languages", headers=bearer(key)).status_code == 200
        assert client.get("/languages", headers={"X-Auth-Token": key}).status_code == 200


async def test_websocket_takes_a_key_three_ways(keyed: tuple[LiveServer, str]) -> None:
    """The Authorization header, ?token= and a first auth message each let a socket work."""
    server, key = keyed
    async with ws_connect(server, key) as ws:
        assert (await ws.request({"type": "ping"}))["type"] == "pong"
    async with connect(f"{server.ws_url}?token={key}", open_timeout=TIMEOUT) as connection:
        await connection.send(json.dumps({"type": "ping", "ref": "p"}))
        assert json.loads(await connection.recv()) == {"type": "pong", "ref": "p"}
    async with ws_connect(server) as ws:
        await ws.send({"type": "auth", "token": key, "ref": "a"})
        assert await ws.recv() == {"type": "authenticated", "ref": "a"}
        created = await ws.request({"type": "create", **HELLO})
        assert created["type"] == "created"


@pytest.mark.parametrize(
    "how",
    [
        "no key, a message",
        "no key, a bad message",
        "wrong header",
        "wrong ?token=",
        "wrong auth message",
    ],
)
async def test_websocket_without_a_good_key_gets_an_error_then_4401(
    keyed: tuple[LiveServer, str], how: str
) -> None:
    """Whatever way a key is missing or wrong: an error with code unauthorized, then close
    code 4401, and nothing done."""
    server, _ = keyed
    url, headers, first = server.ws_url, {}, {"type": "create", "ref": "c", **HELLO}
    if how == "wrong header":
        headers = bearer("lc_" + "y" * 40)
    elif how == "wrong ?token=":
        url += "?token=lc_" + "z" * 40
    elif how == "wrong auth message":
        first = {"type": "auth", "token": "lc_" + "w" * 40, "ref": "c"}
    async with connect(url, additional_headers=headers, open_timeout=TIMEOUT) as connection:
        if how in ("no key, a message", "wrong auth message"):
            await connection.send(json.dumps(first))
        elif how == "no key, a bad message":
            await connection.send('{"ref": "c", "type": "nope"}')
        error = json.loads(await connection.recv())
        assert error["type"] == "error" and error["code"] == "unauthorized"
        if how.startswith("no key") or how == "wrong auth message":
            assert error["ref"] == "c"
        with pytest.raises(ConnectionClosed) as closed:
            await connection.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_token_in_the_url_never_reaches_the_log(
    keyed: tuple[LiveServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn logs the upgrade's path and query: the token's value is redacted there."""
    server, key = keyed
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    async with connect(f"{server.ws_url}?token={key}&x=1", open_timeout=TIMEOUT) as connection:
        await connection.send(json.dumps({"type": "ping"}))
        await connection.recv()
    lines = [record.getMessage() for record in caplog.records]
    assert any("/ws?token=REDACTED&x=1" in line and "[accepted]" in line for line in lines), lines
    assert not any(key in line for line in lines)


async def test_a_revoked_key_stops_working_within_the_cache_time(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Revoked while in use: REST answers 401, and an open socket gets error + 4401 at its next
    message, within KEY_CACHE_TTL_S."""
    settings = embedded_settings(tmp_path_factory)
    key = create_key(settings.database_url, "carol")
    with run_server(settings) as server, server.client(key) as client:
        assert client.get("/languages").status_code == 200
        async with ws_connect(server, key) as ws:
            assert (await ws.request({"type": "ping"}))["type"] == "pong"
            store = Store.from_url(settings.database_url)
            store.api_keys.revoke("carol")
            store.close()
            wait_until(
                lambda: client.get("/languages").status_code == 401,
                "the revoked key is refused",
                timeout=auth.KEY_CACHE_TTL_S + 2,
            )
            await ws.send({"type": "ping", "ref": "late"})
            error = await ws.recv()
            assert error["code"] == "unauthorized"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_keys_from_the_environment_are_tenants_too(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """LIVECODE_API_KEYS: each key works and is a tenant of its own; others are refused."""
    one, two = "k" * 24, "m" * 24
    settings = embedded_settings(tmp_path_factory, api_keys=(one, two))
    with run_server(settings) as server:
        with server.client(one) as first, server.client(two) as second:
            session = first.post("/code-sessions", json=HELLO).json()
            assert first.get(f"/code-sessions/{session['id']}").status_code == 200
            assert second.get(f"/code-sessions/{session['id']}").status_code == 404
        with server.client("n" * 24) as stranger:
            assert stranger.get("/languages").status_code == 401


def test_a_short_environment_key_stops_the_process() -> None:
    """A key that could be guessed is a configuration error naming the variable."""
    with pytest.raises(ConfigError, match="LIVECODE_API_KEYS"):
        Settings.from_env({"LIVECODE_API_KEYS": "short"})


def test_anonymous_is_loopback_only_unless_allowed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """No keys: loopback needs none (and a token sent anyway is not checked), but a request a
    proxy forwards for someone elsewhere is refused, saying what to set; with
    LIVECODE_ALLOW_ANONYMOUS it is served."""
    forwarded = [
        {"X-Forwarded-For": "203.0.113.7"},
        {"X-Real-IP": "203.0.113.7"},
        {"Forwarded": "for=203.0.113.7;proto=https"},
        {"X-Forwarded-For": "127.0.0.1, 198.51.100.2"},
    ]
    with run_server(embedded_settings(tmp_path_factory)) as server, server.client() as client:
        assert client.get("/languages").status_code == 200
        # A token the server cannot know (clients that always send one) is not checked.
        assert client.get("/languages", headers=bearer("lc_" + "q" * 40)).status_code == 200
        assert client.get("/languages", headers={"X-Forwarded-For": "127.0.0.1"}).is_success
        for headers in forwarded:
            answer = client.get("/languages", headers=headers)
            assert answer.status_code == 401, headers
            assert "LIVECODE_ALLOW_ANONYMOUS" in answer.json()["error"]["message"]
    settings = embedded_settings(tmp_path_factory, allow_anonymous=True)
    with run_server(settings) as server, server.client() as client:
        for headers in forwarded:
            assert client.get("/languages", headers=headers).status_code == 200


def test_serve_beyond_loopback_without_keys_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """serve --host 0.0.0.0 with no key stops with what to set; with a key, or with
    --insecure-no-keys, it goes on to serve."""
    monkeypatch.setenv("LIVECODE_DATABASE_URL", f"sqlite:///{tmp_path / 'serve.db'}")
    served: list[str] = []
    monkeypatch.setattr(cli, "_announcing_server", lambda config: _Stub(served, config.host))
    code, _, err = _cli(capsys, "serve", "--host", "0.0.0.0", "--port", "1")
    assert code == 2 and "livecode keys create" in err and "LIVECODE_ALLOW_ANONYMOUS" in err
    assert served == []
    assert _cli(capsys, "serve", "--host", "0.0.0.0", "--insecure-no-keys")[0] == 0
    assert _cli(capsys, "serve", "--host", "127.0.0.1")[0] == 0
    _cli(capsys, "keys", "create", "dave")
    assert _cli(capsys, "serve", "--host", "0.0.0.0")[0] == 0
    assert served == ["0.0.0.0", "127.0.0.1", "0.0.0.0"]


class _Stub:
    def __init__(self, served: list[str], host: str) -> None:
        self.served, self.host = served, host

    def run(self) -> None:
        self.served.append(self.host)


def test_each_execution_records_its_key_and_logs_name_it_never_the_secret(
    keyed: tuple[LiveServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    """created_by is key:NAME; the log line of a queued run names the key and its prefix."""
    server, key = keyed
    caplog.set_level(logging.INFO, logger="livecode")
    with server.client(key) as client:
        execution = client.post("/executions", json=HELLO).json()
    store = Store.from_url(server.settings.database_url)
    try:
        with store.engine.connect() as conn:
            created_by = conn.execute(
                sa.text("SELECT created_by FROM executions WHERE id = :id"),
                {"id": execution["execution_id"]},
            ).scalar_one()
    finally:
        store.close()
    assert created_by == "key:alice"
    lines = [r.getMessage() for r in caplog.records if execution["execution_id"] in r.getMessage()]
    assert any("key:alice" in line and key[:11] in line for line in lines), lines
    assert not any(key in record.getMessage() for record in caplog.records)


def test_unknown_tokens_do_not_reach_the_store(keyed: tuple[LiveServer, str]) -> None:
    """A token that is not an lc_ key is refused without a lookup; one too long to be a key
    too (a cheap 401 for junk)."""
    server, _ = keyed
    with server.client() as client:
        for token in ("not-a-key", "lc_" + "a" * 300):
            assert client.get("/languages", headers=bearer(token)).status_code == 401


def test_preflight_needs_no_key(keyed: tuple[LiveServer, str]) -> None:
    """A CORS preflight carries no Authorization header: it is not refused with 401."""
    server, _ = keyed
    answer = httpx.options(
        f"{server.url}/executions",
        headers={"Origin": server.url, "Access-Control-Request-Method": "POST"},
    )
    assert answer.status_code != 401
