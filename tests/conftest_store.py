"""Store fixtures: ``store`` parametrized over ``sqlite`` and ``postgresql``.

Import the fixture into a test module (``pytest_plugins`` is only allowed in the root
conftest). Its name is ``store`` whichever attribute brings it in; importing it as
``store_fixture`` keeps ruff's F811 quiet about test arguments named ``store``::

    from tests.conftest_store import store_fixture  # noqa: F401

PostgreSQL comes from ``LIVECODE_TEST_DATABASE_URL`` (default: the local ``test`` database).
Each test gets a fresh schema, created from ``schema.sql`` and dropped afterwards. When the
server is unreachable the test is skipped, or failed when ``CI`` is set.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from livecode.store import Store
from tests.utils import require_service

__all__ = [
    "SCHEMA_SQL",
    "postgresql_schema",
    "postgresql_url",
    "require_postgresql",
    "store",
    "store_fixture",
]

DEFAULT_POSTGRESQL_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA_SQL = Path(__file__).resolve().parent.parent / "schema.sql"

# Read at import: an autouse fixture may clear LIVECODE_* before the tests run.
_POSTGRESQL_URL = os.environ.get("LIVECODE_TEST_DATABASE_URL") or DEFAULT_POSTGRESQL_URL


def postgresql_url() -> str:
    """Return the PostgreSQL URL the tests use (``LIVECODE_TEST_DATABASE_URL`` or the default)."""
    return _POSTGRESQL_URL


def require_postgresql() -> str:
    """Return the URL if the server answers; else skip the test (fail it under ``CI``)."""
    url = postgresql_url()

    def select_one() -> None:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3}, poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()

    require_service(f"PostgreSQL at {url}", select_one)
    return url


@contextmanager
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


@pytest.fixture(
    name="store",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)],
)
def store_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A Store with empty tables: a SQLite file, or a fresh PostgreSQL schema from schema.sql."""
    if request.param == "sqlite":
        sqlite_store = Store.from_url(f"sqlite:///{tmp_path / 'livecode.db'}")
        sqlite_store.create_tables()
        try:
            yield sqlite_store
        finally:
            sqlite_store.close()
        return
    with postgresql_schema() as (engine, _name):
        postgresql_store = Store(engine)
        postgresql_store.apply_schema_sql(SCHEMA_SQL)
        yield postgresql_store


# Both names register the fixture `store`. Test modules import `store_fixture`, so that their
# `store` arguments do not shadow an import (ruff F811); a conftest may import `store`.
store = store_fixture
