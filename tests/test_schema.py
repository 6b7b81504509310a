"""schema.sql (the PostgreSQL DDL) matches livecode/tables.py, and create_all works on SQLite."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from livecode.store import Store
from livecode.tables import metadata
from runners import ExecutionStatus, Reason
from tests.utils import SCHEMA_SQL, postgresql_schema

_FAMILIES: tuple[tuple[str, type[Any]], ...] = (
    ("boolean", sa.Boolean),
    ("integer", sa.Integer),
    ("datetime", sa.DateTime),
    ("binary", sa.LargeBinary),
    ("text", sa.String),  # TEXT and VARCHAR
)


@pytest.fixture
def reflected() -> Iterator[tuple[sa.Inspector, str, sa.Engine]]:
    """schema.sql applied to a fresh PostgreSQL schema, and an inspector over it."""
    with postgresql_schema() as (engine, name):
        Store(engine).apply_schema_sql(SCHEMA_SQL)
        yield sa.inspect(engine), name, engine


@pytest.mark.postgresql
def test_tables(reflected: tuple[sa.Inspector, str, sa.Engine]) -> None:
    """schema.sql creates exactly the tables of tables.py."""
    inspector, schema, _ = reflected
    assert sorted(inspector.get_table_names(schema=schema)) == sorted(metadata.tables)


@pytest.mark.postgresql
@pytest.mark.parametrize("table", sorted(metadata.tables))
def test_columns(reflected: tuple[sa.Inspector, str, sa.Engine], table: str) -> None:
    """Same columns in the same order: type family, length, time zone, nullability, default."""
    inspector, schema, _ = reflected
    expected = {
        column.name: _describe(
            column.type,
            bool(column.nullable),
            column.server_default is not None,
            column.primary_key,
        )
        for column in metadata.tables[table].columns
    }
    primary_key = set(inspector.get_pk_constraint(table, schema=schema)["constrained_columns"])
    actual = {
        column["name"]: _describe(
            column["type"],
            column["nullable"],
            column.get("default") is not None,
            column["name"] in primary_key,
        )
        for column in inspector.get_columns(table, schema=schema)
    }
    assert list(actual) == list(expected)
    assert actual == expected


@pytest.mark.postgresql
@pytest.mark.parametrize("table", sorted(metadata.tables))
def test_keys_and_indexes(reflected: tuple[sa.Inspector, str, sa.Engine], table: str) -> None:
    """Same primary key, foreign keys (with ON DELETE), indexes and check constraints."""
    inspector, schema, _ = reflected
    code = metadata.tables[table]

    pk = inspector.get_pk_constraint(table, schema=schema)["constrained_columns"]
    assert pk == [column.name for column in code.primary_key.columns]

    assert _foreign_keys(inspector.get_foreign_keys(table, schema=schema)) == sorted(
        (
            tuple(element.parent.name for element in fk.elements),
            fk.referred_table.name,
            tuple(element.column.name for element in fk.elements),
            (fk.ondelete or "").upper() or None,
        )
        for fk in code.foreign_key_constraints
    )

    assert _indexes(inspector.get_indexes(table, schema=schema)) == sorted(
        (str(index.name), tuple(column.name for column in index.columns), bool(index.unique))
        for index in code.indexes
    )

    checks = {check["name"] for check in inspector.get_check_constraints(table, schema=schema)}
    assert checks == {
        str(constraint.name)
        for constraint in code.constraints
        if isinstance(constraint, sa.CheckConstraint)
    }


@pytest.mark.postgresql
def test_status_check_is_enforced(reflected: tuple[sa.Inspector, str, sa.Engine]) -> None:
    """The database itself refuses an unknown execution status."""
    _, _, engine = reflected
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO executions (id, language, source_code, status, queued_at, created_at)"
            f" VALUES ('{uuid.uuid4()}', 'python', '', 'LOST', now(), now())"
        )


@pytest.mark.postgresql
def test_checks_allow_exactly_the_enums(reflected: tuple[sa.Inspector, str, sa.Engine]) -> None:
    """schema.sql's status and reason CHECKs list the values of ExecutionStatus and Reason."""
    inspector, schema, _ = reflected
    checks = {
        check["name"]: check["sqltext"]
        for check in inspector.get_check_constraints("executions", schema=schema)
    }
    for name, values in (
        ("executions_status_check", ExecutionStatus),
        ("executions_reason_check", Reason),
    ):
        assert set(re.findall(r"'([^']*)'", checks[name])) == {value.value for value in values}


@pytest.mark.postgresql
def test_schema_sql_is_idempotent(reflected: tuple[sa.Inspector, str, sa.Engine]) -> None:
    """Applying schema.sql again (init-db twice) changes nothing and fails on nothing."""
    _, schema, engine = reflected
    Store(engine).apply_schema_sql(SCHEMA_SQL)
    assert sorted(sa.inspect(engine).get_table_names(schema=schema)) == sorted(metadata.tables)


def test_create_all_on_sqlite(tmp_path: Path) -> None:
    """metadata.create_all on SQLite gives the same columns, keys and indexes."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'schema.db'}")
    try:
        store.create_tables()
        inspector = sa.inspect(store.engine)
        assert sorted(inspector.get_table_names()) == sorted(metadata.tables)
        for name, table in metadata.tables.items():
            columns = inspector.get_columns(name)
            assert [(c["name"], c["nullable"]) for c in columns] == [
                (c.name, c.nullable) for c in table.columns
            ]
            assert [(c["name"], _family(c["type"])) for c in columns] == [
                (c.name, _family(c.type)) for c in table.columns
            ]
            fks = _foreign_keys(inspector.get_foreign_keys(name))
            assert fks == sorted(
                (
                    tuple(e.parent.name for e in fk.elements),
                    fk.referred_table.name,
                    tuple(e.column.name for e in fk.elements),
                    (fk.ondelete or "").upper() or None,
                )
                for fk in table.foreign_key_constraints
            )
            assert _indexes(inspector.get_indexes(name)) == sorted(
                (str(i.name), tuple(c.name for c in i.columns), bool(i.unique))
                for i in table.indexes
            )
    finally:
        store.close()


def test_schema_sql_names_every_table() -> None:
    """A cheap guard that runs without PostgreSQL: each table and index is in schema.sql."""
    text = SCHEMA_SQL.read_text(encoding="utf-8")
    for table in metadata.tables.values():
        assert f"CREATE TABLE IF NOT EXISTS {table.name} (" in text
        for index in table.indexes:
            unique = "UNIQUE " if index.unique else ""
            assert f"CREATE {unique}INDEX IF NOT EXISTS {index.name}" in text


# -- helpers -------------------------------------------------------------------------------


def _family(type_: Any) -> str:
    if isinstance(type_, sa.TypeDecorator):
        type_ = type_.impl_instance
    for family, cls in _FAMILIES:
        if isinstance(type_, cls):
            return family
    raise AssertionError(f"no family for type {type_!r}")


def _describe(type_: Any, nullable: bool, has_default: bool, primary_key: bool) -> dict[str, Any]:
    if isinstance(type_, sa.TypeDecorator):
        type_ = type_.impl_instance
    return {
        "family": _family(type_),
        "length": getattr(type_, "length", None),
        "timezone": getattr(type_, "timezone", None),
        # A primary key is NOT NULL whatever the Column says.
        "nullable": nullable and not primary_key,
        "has_default": has_default,
    }


def _foreign_keys(reflected: list[Any]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            tuple(fk["constrained_columns"]),
            fk["referred_table"],
            tuple(fk["referred_columns"]),
            (fk.get("options", {}).get("ondelete") or "").upper() or None,
        )
        for fk in reflected
    )


def _indexes(reflected: list[Any]) -> list[tuple[Any, ...]]:
    return sorted(
        (str(index["name"]), tuple(index["column_names"]), bool(index["unique"]))
        for index in reflected
    )
