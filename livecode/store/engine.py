"""The database under the store: the engine for a URL, transactions, and the schema.

SQLite (embedded) gets one connection shared by every thread, WAL, a busy timeout and
transactions begun by us; PostgreSQL gets psycopg 3 and a bounded pool. A database that is
down or unreachable raises :class:`livecode.errors.Unavailable`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from livecode import errors, metrics
from livecode.config import normalize_database_url
from livecode.tables import metadata

__all__ = ["Database", "begin_sqlite", "create_engine"]

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000
# WAL pages after which a commit checkpoints (SQLite's default: 1,000, 4 MB; this is 40 MB of
# WAL file at most). Each checkpoint holds the store's lock through two fsyncs (1-8 ms here): at
# 250 runs/s, some 14 pages a run, the default checkpointed 4 times a second; hot pages (the
# status index, a session's row) are copied once a checkpoint however often they changed
# (issue 14, A/B at c=4: runs/s B/A 1.036 and 1.059, server CPU -5 and -2 %).
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 10000
POSTGRESQL_CONNECT_TIMEOUT_S = 5
UNAVAILABLE_RETRY_AFTER_S = 1.0

# Errors meaning "the database is not there right now" (also: the pool had no connection free).
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
)


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20) -> sa.Engine:
    """Build an engine configured for the database the URL names.

    SQLite (``sqlite:///./livecode.db``, the embedded default): WAL, ``synchronous=NORMAL``,
    a busy timeout, foreign keys on, usable from any thread, and ``BEGIN IMMEDIATE`` for
    writes. PostgreSQL: psycopg 3 (``postgresql://`` and ``postgres://`` are read as
    ``postgresql+psycopg://``), a bounded pool, a connect timeout.
    """
    parsed = make_url(normalize_database_url(url))
    if parsed.get_backend_name() == "sqlite":
        # One connection for every thread, one transaction at a time (the Database's lock):
        # SQLite writes one transaction at a time anyway, and a connection's page cache is
        # dropped whenever another connection has written, so with a pool each transaction
        # began by re-reading its pages from the file.
        engine = sa.create_engine(
            parsed, connect_args={"check_same_thread": False}, poolclass=sa.pool.StaticPool
        )
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        # No pre-ping: it costs a round trip per checkout on the hot path. A connection lost
        # to a database restart fails one request with 503 (Unavailable) and SQLAlchemy
        # invalidates the pool, so the next request reconnects.
        return sa.create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=10,
            pool_recycle=1800,
            connect_args={"connect_timeout": POSTGRESQL_CONNECT_TIMEOUT_S},
        )
    return sa.create_engine(parsed, pool_pre_ping=True)


class Database:
    """An engine, its error mapping, and SQLite's one-transaction-at-a-time lock.

    Thread-safe. Each ``transaction()`` is one transaction on a pooled connection.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        # SQLite: transactions one at a time, in this process at least (see create_engine)
        self._lock = threading.Lock() if engine.dialect.name == "sqlite" else None

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Raise a database that is down or unreachable as Unavailable, and one without our
        tables as SchemaMissing (both 503s, never a 500)."""
        try:
            with errors.unavailable_on(
                *DATABASE_DOWN,
                message="database unavailable",
                retry_after=UNAVAILABLE_RETRY_AFTER_S,
            ):
                yield
        except errors.Unavailable as exc:
            metrics.STORE_ERRORS.inc()
            raise exc
        except sa.exc.ProgrammingError as exc:
            if not _is_missing_relation(exc):
                raise
            metrics.STORE_ERRORS.inc()
            logger.error("the database has no livecode tables: %s", exc.orig)
            raise errors.SchemaMissing() from exc

    @contextmanager
    def one_at_a_time(self) -> Iterator[None]:
        """Hold SQLite's lock for the block (nothing on PostgreSQL); Unavailable after 5 s."""
        if self._lock is None:
            yield
            return
        if not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise errors.Unavailable("the database is busy", retry_after=UNAVAILABLE_RETRY_AFTER_S)
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[sa.Connection]:
        """One transaction; ``write`` makes SQLite take its write lock up front."""
        with self.errors(), self.one_at_a_time(), self.engine.connect() as conn:
            if write:
                conn.execution_options(livecode_write=True)
            with conn.begin():
                yield conn

    def create_tables(self) -> None:
        """Create the tables that do not exist yet (``metadata.create_all``; embedded mode),
        and add to those of an older release the columns added since, and their indexes
        (schema.sql does the same with ALTER TABLE ... ADD COLUMN IF NOT EXISTS)."""
        with self.errors(), self.one_at_a_time():
            metadata.create_all(self.engine)
            with self.engine.begin() as conn:
                _add_missing_columns(conn)

    def apply_schema_sql(self, path: str | os.PathLike[str]) -> None:
        """Apply a DDL file (``schema.sql``) in one transaction.

        Statements are split on ``;`` once ``--`` comments are removed, so the file must keep
        semicolons out of string literals.
        """
        with open(path, encoding="utf-8") as file:
            statements = _split_sql(file.read())
        with self.transaction(write=True) as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    def ping(self) -> None:
        """Run ``SELECT 1``; raises Unavailable when the database cannot answer."""
        with self.transaction() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self, before: Callable[[], None] = lambda: None) -> None:
        """Close every pooled connection (after the transaction under way, if it ends soon).

        ``before`` runs first, under the lock: it drops what holds on to a connection.
        """
        lock = self._lock
        waited = lock is not None and lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            before()
            self.engine.dispose()
        finally:
            if waited:
                assert lock is not None
                lock.release()


def _add_missing_columns(conn: sa.Connection) -> None:
    """ALTER TABLE ... ADD COLUMN for each column of tables.py a table lacks, and the indexes
    create_all skipped on an old table; a column added after the first release is nullable or
    has a default, so the rows it finds get one."""
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable and column.server_default is None:
                raise RuntimeError(f"{table.name}.{column.name} needs a default to be added")
            definition = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {definition}")
            logger.info("added column %s.%s to an older database", table.name, column.name)
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _is_missing_relation(exc: sa.exc.ProgrammingError) -> bool:
    """Whether the database says a table or column does not exist (PostgreSQL 42P01, 42703;
    SQLite's "no such table")."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate in ("42P01", "42703") or "no such table" in str(exc.orig)


def _configure_sqlite(engine: sa.Engine) -> None:
    """Per-connection pragmas, and transactions we begin ourselves.

    pysqlite's own transaction handling begins lazily and only before DML; we switch it off
    and emit ``BEGIN`` (reads) or ``BEGIN IMMEDIATE`` (writes), so a write transaction takes
    the write lock first and waits on the busy timeout instead of failing on a lock upgrade.
    """

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Straight to the driver: through conn.exec_driver_sql() this one statement took the
        # whole execution path, 0.07-0.14 ms per transaction in a running server; 0.04 direct.
        begin_sqlite(
            conn.connection.driver_connection,
            conn.get_execution_options().get("livecode_write", False),
        )


def begin_sqlite(driver_connection: Any, write: bool) -> None:
    """Begin a transaction ourselves (see _configure_sqlite); a write takes the lock first."""
    driver_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")


def _split_sql(script: str) -> list[str]:
    without_comments = re.sub(r"--[^\n]*", "", script)
    return [s.strip() for s in without_comments.split(";") if s.strip()]
