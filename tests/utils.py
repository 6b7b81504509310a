"""Helpers of the tests: the TIMEOUT unit and waits bounded by it, the real services (PostgreSQL,
the tests' own Redis), real servers (uvicorn on a free port, `livecode worker` processes) and a
WebSocket client."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import httpx
import pytest
import redis
import sqlalchemy as sa
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from livecode.app import create_app
from livecode.cli import server_config
from livecode.config import Settings
from runners import ExecutionStatus

# One unit for every wait in the tests; scale it on a slow machine (the runners tests scale their
# programs' time limits by the same factor).
TIMEOUT_SCALE = float(os.environ.get("LIVECODE_TEST_TIMEOUT_SCALE", "1"))
TIMEOUT = 30.0 * TIMEOUT_SCALE
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_SQL = Path(REPO) / "schema.sql"
# The tests' PostgreSQL server: a session creates a database of its own in it, a store test a
# schema of its own.
POSTGRESQL_URL = (
    os.environ.get("LIVECODE_TEST_DATABASE_URL")
    or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

_T = TypeVar("_T")


def wait_until(
    condition: Callable[[], _T], what: str, *, timeout: float = TIMEOUT, interval_s: float = 0.01
) -> _T:
    """Poll `condition` until it returns something true, and return that.

    For states nothing announces; fails saying `what` did not happen within `timeout`.
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s in vain until {what}")
        time.sleep(interval_s)
    return value


def wait_final(
    client: httpx.Client, execution_id: str, *, timeout: float = TIMEOUT
) -> dict[str, Any]:
    """Poll GET /executions/{id} until the execution is final; return it."""

    def final() -> dict[str, Any] | None:
        execution: dict[str, Any] = client.get(f"/executions/{execution_id}").json()
        return execution if ExecutionStatus(execution["status"]).is_final else None

    return wait_until(final, f"execution {execution_id} is final", timeout=timeout, interval_s=0.05)


def wait_status(client: httpx.Client, execution_id: str, status: str) -> None:
    """Poll GET /executions/{id} until the execution has `status`."""
    wait_until(
        lambda: client.get(f"/executions/{execution_id}").json()["status"] == status,
        f"execution {execution_id} is {status}",
        interval_s=0.05,
    )


# Read at import: an autouse fixture clears LIVECODE_* (not CI) before each test.
_IN_CI = bool(os.environ.get("CI"))
_unreachable: dict[str, str | None] = {}


def missing_service(reason: str) -> NoReturn:
    """Skip locally; under CI a missing service is a failure, not a skip."""
    if _IN_CI:
        pytest.fail(f"{reason}, and CI must test against it")
    pytest.skip(reason)


def require_service(what: str, check: Callable[[], object]) -> None:
    """Skip the test (fail it under CI) when `check` cannot reach the service; checked once."""
    if what not in _unreachable:
        try:
            check()
            _unreachable[what] = None
        except Exception as exc:
            _unreachable[what] = f"{what} is not reachable: {exc}"
    reason = _unreachable[what]
    if reason is not None:
        missing_service(reason)


def require_postgresql() -> str:
    """Return the tests' PostgreSQL URL if it answers; else skip the test (fail it under CI)."""

    def select_one() -> None:
        engine = sa.create_engine(
            POSTGRESQL_URL, connect_args={"connect_timeout": 3}, poolclass=sa.NullPool
        )
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()

    require_service(f"PostgreSQL at {POSTGRESQL_URL}", select_one)
    return POSTGRESQL_URL


@contextlib.contextmanager
def postgresql_schema() -> Iterator[tuple[sa.Engine, str]]:
    """Yield an engine whose ``search_path`` is a new empty schema, dropped afterwards."""
    url = require_postgresql()
    name = f"lc_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(url, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    engine = sa.create_engine(
        url,
        pool_size=10,
        max_overflow=10,
        connect_args={"options": f"-c search_path={name}", "connect_timeout": 3},
    )
    try:
        yield engine, name
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        admin.dispose()


def private_redis_url() -> str:
    """The URL of a redis-server of the tests' own, started on a free port at first use.

    Tests flush and fill their Redis, so they never touch the developer's: the server keeps
    nothing on disk and stops when the test process exits. ``LIVECODE_TEST_REDIS_URL`` points
    them at another Redis instead, one whose data they may delete.
    """
    global _private_redis_url
    explicit = os.environ.get("LIVECODE_TEST_REDIS_URL")
    if explicit:
        return explicit.rstrip("/")
    if _private_redis_url is None:
        _private_redis_url = _start_private_redis()
    return _private_redis_url


_private_redis_url: str | None = None


def _start_private_redis() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        missing_service("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", "/tmp", "--logfile", "", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )
    atexit.register(_stop, process)
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                missing_service(f"the tests' redis-server did not start (exit {process.poll()})")
            time.sleep(0.02)
    client.close()
    return url


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()


def require_redis() -> str:
    """Return the URL of the tests' Redis if it answers; else skip the test (fail it under CI)."""
    url = private_redis_url()

    def ping() -> None:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()

    require_service(f"Redis at {url}", ping)
    return url


def kill_redis_clients(name: str) -> int:
    """Drop the pub/sub connections of the tests' Redis clients named `name`, as a Redis restart
    would; return how many there were.

    Name them by a bus's prefix (``f"{bus.prefix}subscriber"``): other tests may share the
    server, and their connections stay.
    """
    client = redis.Redis.from_url(require_redis())
    try:
        ids = [info["id"] for info in client.client_list(_type="pubsub") if info["name"] == name]
        return sum(client.client_kill_filter(_id=client_id) for client_id in ids)
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def embedded_settings(tmp_path_factory: pytest.TempPathFactory, **overrides: object) -> Settings:
    """Embedded mode (SQLite in a fresh directory, in-process queue and bus), two workers
    unless `overrides` say otherwise."""
    database = tmp_path_factory.mktemp("embedded") / "livecode.db"
    options = {"database_url": f"sqlite:///{database}", "worker_threads": 2} | overrides
    return Settings(**options)  # type: ignore[arg-type]


def distributed_env(postgres_database: str, redis_url: str) -> dict[str, str]:
    """The LIVECODE_* variables of a distributed server or worker process."""
    return {
        "LIVECODE_DATABASE_URL": postgres_database,
        "LIVECODE_REDIS_URL": redis_url,
        "LIVECODE_WORKER_THREADS": "2",
        "LIVECODE_LOG_LEVEL": "WARNING",
    }


def create_key(database_url: str, name: str, **quotas: int) -> str:
    """Make an API key in the store at `database_url`, as `livecode keys create` does; return it."""
    from livecode import auth
    from livecode.store import Store

    store = Store.from_url(database_url)
    try:
        if database_url.startswith("sqlite"):
            store.create_tables()
        key = auth.new_key()
        credential = auth.Credential.of(key)
        store.api_keys.create(name, credential.prefix, credential.sha256, quotas)
        return key
    finally:
        store.close()


def revoke_keys(database_url: str, *names: str) -> None:
    """Revoke keys made by `create_key`."""
    from livecode.store import Store

    store = Store.from_url(database_url)
    try:
        for name in names:
            store.api_keys.revoke(name)
    finally:
        store.close()


def bearer(key: str) -> dict[str, str]:
    """The header that carries an API key."""
    return {"Authorization": f"Bearer {key}"}


@dataclass
class LiveServer:
    url: str
    settings: Settings

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def client(self, key: str | None = None) -> httpx.Client:
        """An HTTP client of the server; with `key`, every request carries it."""
        headers = bearer(key) if key is not None else None
        return httpx.Client(base_url=self.url, timeout=TIMEOUT, headers=headers)


@contextlib.contextmanager
def run_server(
    settings: Settings, *, consume: bool | None = None, port: int | None = None, **config: Any
) -> Iterator[LiveServer]:
    """uvicorn serving create_app(settings) in a thread of this process, on `port` (a server
    restarted on the same port) or a free one; `config` overrides uvicorn's settings."""
    port = port or free_port()
    options = {"host": "127.0.0.1", "port": port, "log_level": "warning", "lifespan": "on"}
    config = server_config(settings, create_app(settings, consume=consume), **(options | config))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)


def livecode_env(settings_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECODE_")}
    env.update(settings_env)
    env["PYTHONPATH"] = REPO
    return env


@contextlib.contextmanager
def run_process(
    args: list[str], env: dict[str, str], ready_url: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A `python -m livecode ...` process, stopped with SIGTERM at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "livecode", *args], env=livecode_env(env), cwd=REPO
    )
    try:
        if ready_url is not None:
            wait_until_http_ok(ready_url, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_http_ok(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 in time")


class Socket:
    """A real WebSocket client speaking JSON, with waits bounded by TIMEOUT."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return json.loads(await self.connection.recv())  # type: ignore[no-any-return]

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send with a fresh ref and return the answer that echoes it (skipping other events)."""
        ref = f"r{time.monotonic_ns()}"
        await self.send({**message, "ref": ref})
        while True:
            event = await self.recv()
            if event.get("ref") == ref:
                return event

    async def until(self, kind: str, execution_id: str | None = None) -> list[dict[str, Any]]:
        """Every event received up to and including the first of type `kind`."""
        seen = []
        while True:
            event = await self.recv()
            seen.append(event)
            if event["type"] == kind and (
                execution_id is None or event.get("execution_id") == execution_id
            ):
                return seen


@contextlib.asynccontextmanager
async def ws_connect(
    server: LiveServer, key: str | None = None, **kwargs: Any
) -> AsyncIterator[Socket]:
    """A socket on the server's /ws; with `key`, its upgrade carries it (Authorization)."""
    if key is not None:
        kwargs["additional_headers"] = {**kwargs.get("additional_headers", {}), **bearer(key)}
    async with connect(server.ws_url, open_timeout=TIMEOUT, max_size=None, **kwargs) as connection:
        yield Socket(connection)


class PistonSocket:
    """A client of /api/v2/connect: JSON messages in and out, and how the socket closed."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def init(self, source: str, language: str = "python", **fields: Any) -> None:
        files = [{"content": source}]
        await self.send(
            {"type": "init", "language": language, "version": "*", "files": files, **fields}
        )

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            return json.loads(await self.connection.recv())  # type: ignore[no-any-return]

    async def until(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        """Messages up to and including the first of type `kind` with the given fields."""
        seen = []
        while True:
            message = await self.recv()
            seen.append(message)
            if message["type"] == kind and all(message.get(k) == v for k, v in match.items()):
                return seen

    async def output(self, text: str) -> list[dict[str, Any]]:
        """Messages up to the one that completes `text` on stdout (python -u may write a line
        and its newline apart, in two data messages)."""
        seen, stdout = [], ""
        while not stdout.endswith(text):
            message = await self.recv()
            seen.append(message)
            if message["type"] == "data" and message["stream"] == "stdout":
                stdout += message["data"]
        return seen

    async def rest(self) -> tuple[list[dict[str, Any]], int | None, str | None]:
        """Every message until the server closes, and its close code and reason."""
        messages = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                messages.append(await self.recv())
        return messages, self.connection.close_code, self.connection.close_reason


@contextlib.asynccontextmanager
async def piston_socket(server: LiveServer) -> AsyncIterator[PistonSocket]:
    url = server.url.replace("http://", "ws://") + "/api/v2/connect"
    async with connect(url, open_timeout=TIMEOUT) as connection:
        yield PistonSocket(connection)


def outputs(events: list[dict[str, Any]], execution_id: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["type"] == "output" and (execution_id is None or e["execution_id"] == execution_id)
    ]


def joined(events: list[dict[str, Any]], stream: str) -> str:
    return "".join(e["data"] for e in outputs(events) if e["stream"] == stream)


class RedisServer:
    """A redis-server of one test's own, on a port it keeps across a kill and a start (so that
    clients reconnect to the same URL); it keeps nothing on disk, so a start is an empty Redis."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing_service("redis-server is not installed (Debian: apt-get install redis-server)")
        self._binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", "/tmp", "--logfile", "", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            wait_until(lambda: _pings(client), f"redis-server on port {self.port} answers")
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: gone at once, with its data."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def own_redis() -> Iterator[RedisServer]:
    """A started RedisServer, killed at the end."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def own_distributed_server(**env: str) -> Iterator[LiveServer]:
    """A server in this process and a `livecode worker` process (LIVECODE_* `env` added), with
    a PostgreSQL database and a redis-server of their own: no other test's runs, left queued
    or retried by a sweeper in a shared store, reach this worker and hold its threads."""
    with own_redis() as redis_server, own_database() as database:
        full_env = {**distributed_env(database, redis_server.url), **env}
        with run_process(["worker"], full_env), run_server(Settings.from_env(full_env)) as server:
            wait_until_http_ok(f"{server.url}/health/workers")  # the worker process has reported
            yield server


@contextlib.contextmanager
def own_database(*, schema: bool = True, base_url: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (with schema.sql applied unless told not to), dropped after.

    One test's own, so that no other test's sweeper sees its executions."""
    url = base_url or require_postgresql()
    name = f"livecode_r_{secrets.token_hex(5)}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    database_url = url.rsplit("/", 1)[0] + "/" + name
    if schema:
        from livecode.store import Store

        store = Store.from_url(database_url)
        store.apply_schema_sql(SCHEMA_SQL)
        store.close()
    try:
        yield database_url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class PrivatePostgres:
    """A PostgreSQL cluster of one test's own (initdb in a temporary directory, a free port),
    for tests that stop and restart it: never the machine's server."""

    def __init__(self) -> None:
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not binaries:
            missing_service("PostgreSQL's server binaries are not installed")
        self._bin = binaries[-1].parent
        # Not under pytest's tmp_path: its parents are root's alone, and initdb refuses root.
        self.root = Path(tempfile.mkdtemp(prefix="livecode-pg-"))
        self.directory = self.root / "pgdata"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        user = _unprivileged_user()
        self._as_user = ["runuser", "-u", user, "--"] if user else []
        self.root.chmod(0o755)
        if user:
            shutil.chown(self.root, user)
        self._run(
            [str(self._bin / "initdb"), "-D", str(self.directory), "-U", "postgres"]
            + ["-A", "trust", "--no-sync", "-E", "UTF8"]
        )

    def _run(self, args: list[str]) -> None:
        subprocess.run(self._as_user + args, check=True, capture_output=True, timeout=TIMEOUT * 2)

    def start(self) -> None:
        options = f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            [str(self._bin / "pg_ctl"), "-D", str(self.directory), "-o", options, "-w", "start"]
            + ["-l", str(self.directory / "log")]
        )

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self._bin / "pg_ctl"), "-D", str(self.directory), "-m", mode, "-w", "stop"])

    def restart(self) -> None:
        """Stop (fast: sessions are cut off) and start again, as an operator's restart does."""
        self.stop("fast")
        self.start()


def _unprivileged_user() -> str | None:
    """initdb refuses root: run the cluster as an ordinary user when we are root."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    missing_service("no unprivileged user to run a private PostgreSQL as")


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started PrivatePostgres, stopped and deleted at the end."""
    cluster = PrivatePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop("immediate")
        shutil.rmtree(cluster.root, ignore_errors=True)


# Short leases and passes, so that recovery tests take seconds (README, Reliability).
FAST_RECOVERY = {
    "LIVECODE_LEASE_S": "2",
    "LIVECODE_SWEEP_INTERVAL_S": "0.5",
    "LIVECODE_MESSAGE_GRACE_S": "2",
    "LIVECODE_RETRY_BACKOFF_S": "0.2",
    "LIVECODE_RELAY_CHECK_S": "1",
}
