"""The fast path: hot statements compiled once and run on the DBAPI connection itself.

Queueing, claiming and finishing an execution run at the service's run rate, and reading one
at its autosave and follow rates. Through ``Connection.execute()`` these cost 0.63 ms of CPU
on SQLite where the same statements on the bare driver take 0.14 ms: the execution context,
cache-key lookup and result wrapping are most of it. :class:`FastPath` keeps the same pool,
pragmas and error mapping as :class:`~livecode.store.engine.Database`, without them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from livecode import errors
from livecode.store.engine import UNAVAILABLE_RETRY_AFTER_S, Database, begin_sqlite

__all__ = ["FastPath", "Prepared"]

logger = logging.getLogger(__name__)


class FastPath:
    """Transactions on a pooled DBAPI connection, and statements run on it. Thread-safe."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine
        self._prepared: dict[int, Prepared] = {}
        # A StaticPool's one DBAPI connection, used by `transaction` without a checkout
        # (which cost more than the rest of a transaction); the pool keeps it open.
        self._shares_connection = isinstance(self._engine.pool, sa.pool.StaticPool)
        self._shared_connection: Any = None

    @contextmanager
    def transaction(self, *, write: bool = False, one_statement: bool = False) -> Iterator[Any]:
        """One transaction on a pooled DBAPI connection itself, for `run`.

        The same pool, pragmas and error mapping as `Database.transaction`, without
        SQLAlchemy's Connection and transaction objects, which took a third of each hot call's
        CPU. ``one_statement``: the block runs a single statement, which the database commits
        on its own (autocommit), sparing PostgreSQL a COMMIT round trip.
        """
        dialect = self._engine.dialect
        with self._database.errors(), self._database.one_at_a_time():
            shared = self._shares_connection
            try:
                connection: Any = self._shared() if shared else self._engine.raw_connection()
            except dialect.loaded_dbapi.Error as exc:
                # The pool hands back the driver's own error (only Connection wraps it): a
                # database that refuses connections (restarting) is a 503, not a 500.
                logger.warning("database connection failed: %s", exc)
                raise errors.Unavailable(
                    "database unavailable", retry_after=UNAVAILABLE_RETRY_AFTER_S
                ) from exc
            driver = getattr(connection, "driver_connection", connection)
            autocommit = one_statement and dialect.name == "postgresql"
            try:
                with self._driver_errors(connection, "BEGIN"):
                    if autocommit:
                        driver.autocommit = True
                    elif dialect.name == "sqlite" and not one_statement:
                        begin_sqlite(driver, write)
                yield connection
                if not one_statement:
                    with self._driver_errors(connection, "COMMIT"):
                        connection.commit()
            except BaseException:
                with contextlib.suppress(Exception):  # a lost connection: the pool drops it
                    connection.rollback()
                raise
            finally:
                if autocommit:
                    with contextlib.suppress(Exception):  # as the pool expects it back
                        driver.autocommit = False
                if not shared:
                    connection.close()  # back to the pool

    def run(
        self, conn: Any, statement: sa.ClauseElement, parameters: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Run a hot statement (a module constant) in a `transaction`; return its rows."""
        prepared = self._prepared.get(id(statement))
        if prepared is None:
            prepared = self._prepared[id(statement)] = Prepared(statement, self._engine.dialect)
        with self._driver_errors(conn, prepared.sql):
            return prepared.run(conn, parameters)

    def forget_connection(self) -> None:
        """Let go of the shared connection (the engine is being disposed); under the lock."""
        self._shared_connection = None

    def _shared(self) -> Any:
        """The StaticPool's DBAPI connection (a new one after a loss); under the lock."""
        if self._shared_connection is None:
            checked_out = self._engine.raw_connection()
            self._shared_connection = checked_out.dbapi_connection
            checked_out.close()  # the pool keeps it open
        return self._shared_connection

    @contextmanager
    def _driver_errors(self, connection: Any, sql: str) -> Iterator[None]:
        """Raise the driver's errors as SQLAlchemy's, which `Database.errors` maps.

        A lost connection goes, and so do the others in the pool, as on SQLAlchemy's own path:
        those opened before a database restart are lost too, and would each fail a request.
        """
        dialect = self._engine.dialect
        try:
            yield
        except dialect.loaded_dbapi.Error as exc:
            driver = getattr(connection, "driver_connection", connection)
            lost = dialect.is_disconnect(exc, driver, None)
            error = sa.exc.DBAPIError.instance(
                sql, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost
            )
            if not lost:
                raise error from exc
            if connection is self._shared_connection:
                self._shared_connection = None
            else:
                connection.invalidate(exc)
            self._engine.dispose()
            logger.warning("database connection lost: %s", exc)
            raise errors.Unavailable(
                "database unavailable", retry_after=UNAVAILABLE_RETRY_AFTER_S
            ) from error


class Prepared:
    """A hot statement compiled once for a dialect and run on the DBAPI cursor itself.

    Values still go through each type's own bind and result processors; `FastPath` raises a
    driver error as SQLAlchemy's, so callers see what ``Connection.execute()`` would give them.
    """

    __slots__ = ("_statement", "sql", "_order", "_binds", "_columns")

    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, sa.sql.compiler.SQLCompiler)
        if compiled.escaped_bind_names:
            raise RuntimeError(f"bind names need escaping in {compiled.string!r}")
        self._statement = statement  # holds its id(), the cache key, for as long as this lives
        self.sql = compiled.string
        self._order = compiled.positiontup  # None for a named paramstyle (psycopg)
        self._binds = {
            name: (bind.effective_value, bind.type.dialect_impl(dialect).bind_processor(dialect))
            for name, bind in compiled.binds.items()
        }
        self._columns = [
            (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in getattr(statement, "exported_columns", ())
        ]

    def run(self, connection: Any, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Execute on a DBAPI connection; return the rows it returns, as dicts."""
        values: dict[str, Any] = {}
        for name, (default, process) in self._binds.items():
            value = parameters.get(name, default)
            values[name] = value if process is None or value is None else process(value)
        bound: Any = values if self._order is None else [values[name] for name in self._order]
        cursor = connection.cursor()
        try:
            cursor.execute(self.sql, bound)
            # A statement returns rows when it has columns (a SELECT, a RETURNING): psycopg's
            # cursor.description builds a Column object per column at each call, 6 % of a
            # worker's CPU with RETURNING every column of an execution (issue 14).
            rows = cursor.fetchall() if self._columns else []
        finally:
            cursor.close()
        return [
            {
                key: value if process is None or value is None else process(value)
                for (key, process), value in zip(self._columns, row, strict=True)
            }
            for row in rows
        ]
