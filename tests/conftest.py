"""Shared fixtures: a clean environment, real PostgreSQL and Redis, live servers in both modes.

The fixture modules registered below serve every test module: name `store` (SQLite and
PostgreSQL) or `bus` (local and Redis), or `redis_bus`, as an argument, and that is all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from livecode.config import Settings
from tests.utils import (
    POSTGRESQL_URL,
    SCHEMA_SQL,
    LiveServer,
    embedded_settings,
    free_port,
    missing_service,
    own_distributed_server,
    private_redis_url,
    run_server,
)

pytest_plugins = ["tests.conftest_store", "tests.conftest_bus"]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LIVECODE_") and not name.startswith("LIVECODE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)


@pytest.fixture
def anyio_backend() -> str:
    """Run the anyio-marked tests on asyncio only (the server's loop)."""
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database with schema.sql applied; dropped at the end."""
    name = f"livecode_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRESQL_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError:
        admin.dispose()
        missing_service("PostgreSQL is not reachable")
    url = POSTGRESQL_URL.rsplit("/", 1)[0] + "/" + name
    from livecode.store import Store

    store = Store.from_url(url)
    store.apply_schema_sql(SCHEMA_SQL)
    store.close()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Database 1 of the tests' own Redis, emptied first (broker queues are per database)."""
    url = f"{private_redis_url()}/1"
    try:
        client = redis.Redis.from_url(url)
        client.ping()
        client.flushdb()
        client.close()
    except redis.RedisError:
        missing_service("Redis is not reachable")
    return url


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server in embedded mode: SQLite, and queue, bus and worker threads in this process."""
    with run_server(embedded_settings(tmp_path_factory)) as server:
        yield server


@pytest.fixture(scope="module")
def distributed_server() -> Iterator[LiveServer]:
    """A server in this process (no workers) and a separate `livecode worker` process, with a
    PostgreSQL database and a redis-server of their own (own_distributed_server)."""
    with own_distributed_server() as server:
        yield server


@pytest.fixture(scope="module")
def server_without_redis(postgres_database: str) -> Iterator[LiveServer]:
    """Distributed settings whose Redis is not there (a closed port)."""
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    with run_server(Settings(database_url=postgres_database, redis_url=redis_url)) as server:
        yield server


@pytest.fixture(params=["embedded", "distributed"])
def server(request: pytest.FixtureRequest) -> LiveServer:
    """The same tests against both modes."""
    return request.getfixturevalue(f"{request.param}_server")  # type: ignore[no-any-return]
