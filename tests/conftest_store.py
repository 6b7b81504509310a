"""Store fixture: ``store`` parametrized over ``sqlite`` and ``postgresql``.

A plugin of the root conftest (``pytest_plugins``): a test names ``store`` as an argument.

PostgreSQL is ``tests.utils.POSTGRESQL_URL``. Each test gets a fresh schema, created from
``schema.sql`` and dropped afterwards. When the server is unreachable the test is skipped, or
failed when ``CI`` is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from livecode.store import Store
from tests.utils import SCHEMA_SQL, postgresql_schema


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
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
