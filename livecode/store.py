"""The store: every read and write of sessions and executions.

``Store`` wraps a sync SQLAlchemy ``Engine`` and is thread-safe: the server's threadpool and
the worker threads share one instance. Each method is one transaction. Each status move is one
guarded ``UPDATE ... WHERE status IN (...)``, so a retried or redelivered call does nothing
harmful: it returns ``None`` instead of moving the execution twice.

A database that is down or unreachable raises :class:`livecode.errors.Unavailable`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from livecode import errors
from livecode.config import normalize_database_url
from livecode.tables import code_sessions, executions, metadata
from runners import ExecutionStatus, Reason

__all__ = ["Execution", "Session", "SessionStatus", "ExecutionStatus", "Store"]

logger = logging.getLogger(__name__)

RUNS_EXHAUSTED_RETRY_S = 86400.0

SQLITE_BUSY_TIMEOUT_MS = 5000
POSTGRESQL_CONNECT_TIMEOUT_S = 5
UNAVAILABLE_RETRY_AFTER_S = 1.0

# Errors meaning "the database is not there right now" (also: the pool had no connection free).
_DATABASE_DOWN: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
)


class SessionStatus(enum.StrEnum):
    """Where a session is. Only ACTIVE for now: deleted sessions are gone."""

    ACTIVE = "ACTIVE"


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """A code session: the source a user edits, versioned by each save."""

    id: str
    owner: str
    language: str
    source_code: str
    status: SessionStatus
    version: int
    run_count: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Execution:
    """One run of some source, with its final state once it has one.

    ``chunks`` lists the output events as ``(stream, n_chars)`` in seq order, so a follower
    joining after the end can be replayed the same events with the same seq numbers.
    """

    id: str
    session_id: str | None
    owner: str
    language: str
    source_code: str
    stdin: bytes | None
    args: tuple[str, ...]
    limits: dict[str, Any]
    interactive: bool
    status: ExecutionStatus
    reason: Reason | None
    exit_code: int | None
    signal: int | None
    stdout: str | None
    stderr: str | None
    compile_output: str | None
    stdout_truncated: bool
    stderr_truncated: bool
    execution_time_ms: int | None
    cpu_time_ms: int | None
    memory_kb: int | None
    attempt: int
    chunks: list[tuple[str, int]] | None
    error_message: str | None
    queued_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    created_at: dt.datetime

    @property
    def is_final(self) -> bool:
        return self.status.is_final


class Store:
    """Sessions and executions in SQLite or PostgreSQL.

    Thread-safe: share one instance between threads. Each method is one transaction.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._prepared: dict[int, _Prepared] = {}
        # SQLite: transactions one at a time, in this process at least (see from_url)
        self._lock = threading.Lock() if engine.dialect.name == "sqlite" else None
        # A StaticPool's one DBAPI connection, used by `_driver_transaction` without a checkout
        # (which cost more than the rest of a transaction); the pool keeps it open.
        self._shares_connection = isinstance(engine.pool, sa.pool.StaticPool)
        self._shared_connection: Any = None

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10, max_overflow: int = 20) -> Store:
        """Build a store with an engine configured for the database the URL names.

        SQLite (``sqlite:///./livecode.db``, the embedded default): WAL, ``synchronous=NORMAL``,
        a busy timeout, foreign keys on, usable from any thread, and ``BEGIN IMMEDIATE`` for
        writes. PostgreSQL: psycopg 3 (``postgresql://`` and ``postgres://`` are read as
        ``postgresql+psycopg://``), a bounded pool, a connect timeout.
        """
        parsed = make_url(normalize_database_url(url))
        if parsed.get_backend_name() == "sqlite":
            # One connection for every thread, one transaction at a time (the Store's lock):
            # SQLite writes one transaction at a time anyway, and a connection's page cache is
            # dropped whenever another connection has written, so with a pool each transaction
            # began by re-reading its pages from the file.
            engine = sa.create_engine(
                parsed, connect_args={"check_same_thread": False}, poolclass=sa.pool.StaticPool
            )
            _configure_sqlite(engine)
        elif parsed.get_backend_name() == "postgresql":
            # No pre-ping: it costs a round trip per checkout on the hot path. A connection lost
            # to a database restart fails one request with 503 (Unavailable) and SQLAlchemy
            # invalidates the pool, so the next request reconnects.
            engine = sa.create_engine(
                parsed,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=10,
                pool_recycle=1800,
                connect_args={"connect_timeout": POSTGRESQL_CONNECT_TIMEOUT_S},
            )
        else:
            engine = sa.create_engine(parsed, pool_pre_ping=True)
        return cls(engine)

    # -- lifecycle ---------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Create the tables that do not exist yet (``metadata.create_all``; embedded mode)."""
        with self._database(), self._one_at_a_time():
            metadata.create_all(self.engine)

    def apply_schema_sql(self, path: str | os.PathLike[str]) -> None:
        """Apply a DDL file (``schema.sql``) in one transaction; used by ``livecode init-db``.

        Statements are split on ``;`` once ``--`` comments are removed, so the file must keep
        semicolons out of string literals.
        """
        with open(path, encoding="utf-8") as file:
            statements = _split_sql(file.read())
        with self._transaction(write=True) as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    def ping(self) -> None:
        """Run ``SELECT 1``; raises Unavailable when the database cannot answer."""
        with self._transaction() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        """Close every pooled connection (after the transaction under way, if it ends soon)."""
        lock = self._lock
        waited = lock is not None and lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            self._shared_connection = None
            self.engine.dispose()
        finally:
            if waited:
                assert lock is not None
                lock.release()

    # -- sessions ----------------------------------------------------------------------------

    def create_session(self, language: str, source_code: str, owner: str = "") -> Session:
        """Insert a new ACTIVE session at version 1."""
        now = _now()
        session = Session(
            id=_new_id(),
            owner=owner,
            language=language,
            source_code=source_code,
            status=SessionStatus.ACTIVE,
            version=1,
            run_count=0,
            created_at=now,
            updated_at=now,
        )
        with self._transaction(write=True) as conn:
            conn.execute(code_sessions.insert().values(**dataclasses.asdict(session)))
        logger.debug("session %s created (%s)", session.id, language)
        return session

    def get_session(self, session_id: str, owner: str = "") -> Session:
        """Return the session; NotFound when unknown, invalid or another owner's."""
        session_id = parse_id(session_id, "session")
        with self._transaction() as conn:
            row = (
                conn.execute(
                    sa.select(code_sessions).where(
                        code_sessions.c.id == session_id, code_sessions.c.owner == owner
                    )
                )
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise errors.NotFound("session not found")
        return _session(row)

    def save_source(
        self, session_id: str, source_code: str, base_version: int | None, owner: str = ""
    ) -> Session:
        """Replace the source and bump the version; committed before it returns.

        With ``base_version``, the save applies only if the session is still at that version.

        Raises:
            NotFound: no such session for this owner.
            VersionConflict: ``base_version`` is stale; nothing was changed.
        """
        session_id = parse_id(session_id, "session")
        guard = [code_sessions.c.id == session_id, code_sessions.c.owner == owner]
        if base_version is not None:
            guard.append(code_sessions.c.version == base_version)
        with self._transaction(write=True) as conn:
            row = (
                conn.execute(
                    code_sessions.update()
                    .where(*guard)
                    .values(
                        source_code=source_code,
                        version=code_sessions.c.version + 1,
                        updated_at=_now(),
                    )
                    .returning(*code_sessions.c)
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                current = conn.execute(
                    sa.select(code_sessions.c.version).where(
                        code_sessions.c.id == session_id, code_sessions.c.owner == owner
                    )
                ).scalar_one_or_none()
        if row is None:
            if current is None:
                raise errors.NotFound("session not found")
            raise errors.VersionConflict(current)
        return _session(row)

    def delete_session(self, session_id: str, owner: str = "") -> list[str]:
        """Delete the session and its executions; return the ids that were QUEUED or RUNNING.

        The caller cancels those (their messages and programs may still be in flight).
        Raises NotFound when there is no such session for this owner.
        """
        session_id = parse_id(session_id, "session")
        owned = [code_sessions.c.id == session_id, code_sessions.c.owner == owner]
        with self._transaction(write=True) as conn:
            # Lock the session first: an execution inserted concurrently either commits before
            # (and is deleted below) or waits and then finds the session gone.
            found = conn.execute(
                sa.select(code_sessions.c.id).where(*owned).with_for_update()
            ).scalar_one_or_none()
            if found is None:
                raise errors.NotFound("session not found")
            # Deleted explicitly rather than left to ON DELETE CASCADE alone, to learn each
            # one's status at the moment it went.
            deleted = conn.execute(
                executions.delete()
                .where(executions.c.session_id == session_id)
                .returning(executions.c.id, executions.c.status)
            ).all()
            conn.execute(code_sessions.delete().where(*owned))
        active = [id_ for id_, status in deleted if not ExecutionStatus(status).is_final]
        logger.debug("session %s deleted with %d executions", session_id, len(deleted))
        return active

    # -- executions --------------------------------------------------------------------------

    def create_execution(
        self,
        *,
        session_id: str | None,
        language: str | None = None,
        source_code: str | None = None,
        stdin: bytes | None,
        args: Sequence[str],
        limits: Mapping[str, Any],
        interactive: bool,
        owner: str = "",
        max_runs_per_session: int | None = None,
        max_queued: int | None = None,
    ) -> Execution:
        """Insert a QUEUED execution, counting it against its session's runs.

        With a session, its ``run_count`` goes up by one in the same transaction, guarded by
        ``max_runs_per_session`` when given, and a ``language`` / ``source_code`` left out are
        the session's as of that transaction. With ``max_queued``, a queue already that long
        refuses the execution. Nothing is written when this raises.

        Raises:
            NotFound: no such session for this owner.
            RateLimited: the session has used its ``max_runs_per_session`` runs.
            Unavailable: ``max_queued`` executions are queued already.
        """
        if session_id is not None:
            session_id = parse_id(session_id, "session")
        elif language is None or source_code is None:
            raise RuntimeError("create_execution() without a session needs language and source")
        now = _now()
        with self._driver_transaction(write=True) as conn:
            if (
                max_queued is not None
                and self._count_in(conn, ExecutionStatus.QUEUED) >= max_queued
            ):
                raise errors.Unavailable("the queue is full; try again shortly", retry_after=5.0)
            if session_id is not None:
                session_language, session_source = self._count_run(
                    conn, session_id, owner, max_runs_per_session
                )
                language = session_language if language is None else language
                source_code = session_source if source_code is None else source_code
            assert language is not None and source_code is not None
            execution = self._new_execution(
                session_id, owner, language, source_code, stdin, args, limits, interactive, now
            )
            values = {name: getattr(execution, name) for name in _EXECUTION_FIELDS}
            values["args"] = list(execution.args)
            self._run(conn, _INSERT_EXECUTION, values)
        logger.debug("execution %s queued (session %s)", execution.id, session_id)
        return execution

    @staticmethod
    def _new_execution(
        session_id: str | None,
        owner: str,
        language: str,
        source_code: str,
        stdin: bytes | None,
        args: Sequence[str],
        limits: Mapping[str, Any],
        interactive: bool,
        now: dt.datetime,
    ) -> Execution:
        return Execution(
            id=_new_id(),
            session_id=session_id,
            owner=owner,
            language=language,
            source_code=source_code,
            stdin=stdin,
            args=tuple(args),
            limits=dict(limits),
            interactive=interactive,
            status=ExecutionStatus.QUEUED,
            reason=None,
            exit_code=None,
            signal=None,
            stdout=None,
            stderr=None,
            compile_output=None,
            stdout_truncated=False,
            stderr_truncated=False,
            execution_time_ms=None,
            cpu_time_ms=None,
            memory_kb=None,
            attempt=0,
            chunks=None,
            error_message=None,
            queued_at=now,
            started_at=None,
            finished_at=None,
            created_at=now,
        )

    def count_queued(self) -> int:
        """Return how many executions are QUEUED (all owners): the queue's length."""
        return self._count(ExecutionStatus.QUEUED)

    def count_running(self) -> int:
        """Return how many executions are RUNNING (all owners)."""
        return self._count(ExecutionStatus.RUNNING)

    def claim(self, execution_id: str) -> Execution | None:
        """Move an execution to RUNNING and count the attempt.

        Idempotent: returns None when the execution is not QUEUED (already taken, final, or
        gone), so a redelivered message does nothing.
        """
        execution = self._move(
            execution_id,
            from_statuses=(ExecutionStatus.QUEUED,),
            values={
                "status": ExecutionStatus.RUNNING.value,
                "attempt": _NEXT_ATTEMPT,
                "started_at": _now(),
            },
        )
        if execution is not None:
            logger.debug("execution %s claimed (attempt %d)", execution.id, execution.attempt)
        return execution

    def finish(
        self,
        execution_id: str,
        *,
        status: ExecutionStatus | str,
        reason: str | None,
        exit_code: int | None,
        signal: int | None,
        stdout: str | None,
        stderr: str | None,
        compile_output: str | None,
        stdout_truncated: bool,
        stderr_truncated: bool,
        execution_time_ms: int | None,
        cpu_time_ms: int | None,
        memory_kb: int | None,
        chunks: Sequence[Sequence[Any]] | None,
        error_message: str | None = None,
    ) -> Execution | None:
        """Write an execution's final state, from RUNNING (or QUEUED: an error before claim).

        ``chunks`` is the output index, ``(stream, n_chars)`` per seq (tuples or lists).
        Idempotent: returns None when the execution is already final (or gone).
        """
        status = ExecutionStatus(status)
        if not status.is_final:
            raise RuntimeError(f"finish() expects a final status, got {status.value}")
        execution = self._move(
            execution_id,
            from_statuses=(ExecutionStatus.QUEUED, ExecutionStatus.RUNNING),
            values={
                "status": status.value,
                "reason": reason,
                "exit_code": exit_code,
                "signal": signal,
                "stdout": stdout,
                "stderr": stderr,
                "compile_output": compile_output,
                "stdout_truncated": stdout_truncated,
                "stderr_truncated": stderr_truncated,
                "execution_time_ms": execution_time_ms,
                "cpu_time_ms": cpu_time_ms,
                "memory_kb": memory_kb,
                "chunks": None if chunks is None else [[str(s), int(n)] for s, n in chunks],
                "error_message": error_message,
                "finished_at": _now(),
            },
        )
        if execution is not None:
            logger.debug("execution %s finished: %s (%s)", execution.id, status.value, reason)
        return execution

    def cancel_queued(self, execution_id: str) -> Execution | None:
        """Move a QUEUED execution to CANCELLED (reason ``cancelled``, no output).

        Returns None when it is not QUEUED: a RUNNING one is cancelled through its program.
        """
        execution = self._move(
            execution_id,
            from_statuses=(ExecutionStatus.QUEUED,),
            values={
                "status": ExecutionStatus.CANCELLED.value,
                "reason": "cancelled",
                "stdout": "",
                "stderr": "",
                "chunks": [],
                "finished_at": _now(),
            },
        )
        if execution is not None:
            logger.debug("execution %s cancelled while queued", execution.id)
        return execution

    def fail(self, execution_id: str, message: str) -> Execution | None:
        """End a QUEUED or RUNNING execution as FAILED / ``internal_error``: our fault, not the
        program's. None when it is final already."""
        return self._move(
            execution_id,
            from_statuses=(ExecutionStatus.QUEUED, ExecutionStatus.RUNNING),
            values={
                "status": ExecutionStatus.FAILED.value,
                "reason": "internal_error",
                "stdout": "",
                "stderr": "",
                "compile_output": "",
                "chunks": [],
                "error_message": message,
                "finished_at": _now(),
            },
        )

    def unfinished(self) -> tuple[list[str], list[str]]:
        """Ids of the QUEUED and of the RUNNING executions, oldest first."""
        with self._transaction() as conn:
            rows = conn.execute(
                sa.select(executions.c.id, executions.c.status)
                .where(
                    executions.c.status.in_(
                        [ExecutionStatus.QUEUED.value, ExecutionStatus.RUNNING.value]
                    )
                )
                .order_by(executions.c.created_at)
            ).all()
        queued = [row.id for row in rows if row.status == ExecutionStatus.QUEUED.value]
        running = [row.id for row in rows if row.status == ExecutionStatus.RUNNING.value]
        return queued, running

    def get_execution(self, execution_id: str, owner: str = "") -> Execution:
        """Return the execution; NotFound when unknown, invalid or another owner's."""
        execution_id = parse_id(execution_id, "execution")
        with self._driver_transaction(one_statement=True) as conn:
            parameters = {"execution_id": execution_id, "owner": owner}
            rows = self._run(conn, _GET_EXECUTION, parameters)
        if not rows:
            raise errors.NotFound("execution not found")
        return _execution(rows[0])

    def list_executions(
        self, session_id: str, owner: str = "", limit: int = 50, before: str | None = None
    ) -> list[Execution]:
        """Return a session's executions, newest first (``created_at``, then id).

        ``before`` is an execution id of the same session: only executions created before it
        are listed (the next page).

        Raises:
            NotFound: no such session for this owner.
            InvalidValue: ``limit`` below 1, or ``before`` not an execution of this session.
        """
        if limit < 1:
            raise errors.InvalidValue("limit must be at least 1")
        session_id = parse_id(session_id, "session")
        with self._transaction() as conn:
            found = conn.execute(
                sa.select(code_sessions.c.id).where(
                    code_sessions.c.id == session_id, code_sessions.c.owner == owner
                )
            ).scalar_one_or_none()
            if found is None:
                raise errors.NotFound("session not found")
            query = sa.select(executions).where(executions.c.session_id == session_id)
            if before is not None:
                cursor = conn.execute(
                    sa.select(executions.c.created_at, executions.c.id).where(
                        executions.c.id == parse_id(before, "before", errors.InvalidValue),
                        executions.c.session_id == session_id,
                    )
                ).one_or_none()
                if cursor is None:
                    raise errors.InvalidValue("before: no such execution in this session")
                query = query.where(
                    sa.or_(
                        executions.c.created_at < cursor.created_at,
                        sa.and_(
                            executions.c.created_at == cursor.created_at,
                            executions.c.id < cursor.id,
                        ),
                    )
                )
            rows = (
                conn.execute(
                    query.order_by(executions.c.created_at.desc(), executions.c.id.desc()).limit(
                        limit
                    )
                )
                .mappings()
                .all()
            )
        return [_execution(row) for row in rows]

    # -- helpers -----------------------------------------------------------------------------

    @contextmanager
    def _database(self) -> Iterator[None]:
        with errors.unavailable_on(
            *_DATABASE_DOWN,
            message="database unavailable",
            retry_after=UNAVAILABLE_RETRY_AFTER_S,
        ):
            yield

    @contextmanager
    def _one_at_a_time(self) -> Iterator[None]:
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
    def _transaction(self, *, write: bool = False) -> Iterator[sa.Connection]:
        """One transaction; ``write`` makes SQLite take its write lock up front."""
        with self._database(), self._one_at_a_time(), self.engine.connect() as conn:
            if write:
                conn.execution_options(livecode_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _driver_transaction(
        self, *, write: bool = False, one_statement: bool = False
    ) -> Iterator[Any]:
        """One transaction on a pooled DBAPI connection itself, for `_run`.

        The same pool, pragmas and error mapping as `_transaction`, without SQLAlchemy's
        Connection and transaction objects, which took a third of each hot call's CPU.
        ``one_statement``: the block runs a single statement, which the database commits on
        its own (autocommit), sparing PostgreSQL a COMMIT round trip.
        """
        dialect = self.engine.dialect
        with self._database(), self._one_at_a_time():
            shared = self._shares_connection
            connection: Any = self._shared() if shared else self.engine.raw_connection()
            driver = getattr(connection, "driver_connection", connection)
            autocommit = one_statement and dialect.name == "postgresql"
            try:
                with self._driver_errors(connection, "BEGIN"):
                    if autocommit:
                        driver.autocommit = True
                    elif dialect.name == "sqlite" and not one_statement:
                        _begin_sqlite(driver, write)
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

    def _shared(self) -> Any:
        """The StaticPool's DBAPI connection (a new one after a loss); under the lock."""
        if self._shared_connection is None:
            checked_out = self.engine.raw_connection()
            self._shared_connection = checked_out.dbapi_connection
            checked_out.close()  # the pool keeps it open
        return self._shared_connection

    @contextmanager
    def _driver_errors(self, connection: Any, sql: str) -> Iterator[None]:
        """Raise the driver's errors as SQLAlchemy's, which `_database` maps.

        A lost connection goes, and so do the others in the pool, as on SQLAlchemy's own path:
        those opened before a database restart are lost too, and would each fail a request.
        """
        dialect = self.engine.dialect
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
            self.engine.dispose()
            logger.warning("database connection lost: %s", exc)
            raise errors.Unavailable(
                "database unavailable", retry_after=UNAVAILABLE_RETRY_AFTER_S
            ) from error

    def _run(
        self, conn: Any, statement: sa.ClauseElement, parameters: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Run a hot statement (a module constant) in a `_driver_transaction`."""
        prepared = self._prepared.get(id(statement))
        if prepared is None:
            prepared = self._prepared[id(statement)] = _Prepared(statement, self.engine.dialect)
        with self._driver_errors(conn, prepared.sql):
            return prepared.run(conn, parameters)

    def _count(self, status: ExecutionStatus) -> int:
        with self._driver_transaction(one_statement=True) as conn:
            return self._count_in(conn, status)

    def _count_in(self, conn: Any, status: ExecutionStatus) -> int:
        return int(self._run(conn, _COUNT_STATUS, {"status": status.value})[0]["count"])

    def _move(
        self,
        execution_id: str,
        *,
        from_statuses: tuple[ExecutionStatus, ...],
        values: dict[str, Any],
    ) -> Execution | None:
        """One guarded UPDATE of an execution's status; None when the guard does not hold."""
        try:
            execution_id = parse_id(execution_id, "execution")
        except errors.NotFound:
            return None
        statement = _move_statement(from_statuses, values)
        parameters = {
            key: value for key, value in values.items() if not isinstance(value, sa.ClauseElement)
        }
        parameters["execution_id"] = execution_id
        with self._driver_transaction(write=True, one_statement=True) as conn:
            rows = self._run(conn, statement, parameters)
        return _execution(rows[0]) if rows else None

    def _count_run(
        self, conn: Any, session_id: str, owner: str, max_runs_per_session: int | None
    ) -> tuple[str, str]:
        updated = self._run(
            conn,
            _COUNT_RUN,
            {
                "b_session_id": session_id,
                "b_owner": owner,
                "b_cap": min(max_runs_per_session or _INT_MAX, _INT_MAX),  # an INTEGER column
            },
        )
        if updated:
            return updated[0]["language"], updated[0]["source_code"]
        if not self._run(conn, _SESSION_EXISTS, {"b_session_id": session_id, "b_owner": owner}):
            raise errors.NotFound("session not found")
        # The cap never lifts for this session; Retry-After is set because every 429 has one.
        raise errors.RateLimited(
            f"this session has used its {max_runs_per_session} runs; create a new session",
            retry_after=RUNS_EXHAUSTED_RETRY_S,
        )


_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


def parse_id(value: str, kind: str, refusal: type[errors.LivecodeError] = errors.NotFound) -> str:
    """Return the canonical form of a uuid string; anything else is simply not found."""
    if isinstance(value, str) and _CANONICAL_ID.fullmatch(value):
        return value  # ours, as we wrote it: uuid.UUID() would build the same string again
    try:
        return str(uuid.UUID(value))
    except (TypeError, ValueError, AttributeError):
        if refusal is errors.NotFound:
            raise errors.NotFound(f"{kind} not found") from None
        raise refusal(f"{kind}: not an id") from None


def _session(row: sa.RowMapping) -> Session:
    return Session(
        id=row["id"],
        owner=row["owner"],
        language=row["language"],
        source_code=row["source_code"],
        status=SessionStatus(row["status"]),
        version=row["version"],
        run_count=row["run_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


# Building a statement and its cache key costs more CPU than running it on SQLite: the hot ones
# are built once, with their values as bind parameters.
_INT_MAX = 2**31 - 1
_INSERT_EXECUTION = executions.insert()
_NEXT_ATTEMPT = executions.c.attempt + 1
_COUNT_STATUS = (
    sa.select(sa.func.count().label("count"))
    .select_from(executions)
    .where(executions.c.status == sa.bindparam("status"))
)
_COUNT_RUN = (
    code_sessions.update()
    .where(
        # Bind names in an UPDATE must differ from its columns' names.
        code_sessions.c.id == sa.bindparam("b_session_id"),
        code_sessions.c.owner == sa.bindparam("b_owner"),
        code_sessions.c.run_count < sa.bindparam("b_cap"),
    )
    .values(run_count=code_sessions.c.run_count + 1)
    .returning(code_sessions.c.language, code_sessions.c.source_code)
)
_SESSION_EXISTS = sa.select(code_sessions.c.id).where(
    code_sessions.c.id == sa.bindparam("b_session_id"),
    code_sessions.c.owner == sa.bindparam("b_owner"),
)
_GET_EXECUTION = sa.select(executions).where(
    executions.c.id == sa.bindparam("execution_id"), executions.c.owner == sa.bindparam("owner")
)
_MOVE_STATEMENTS: dict[tuple[Any, ...], sa.Update] = {}


class _Prepared:
    """A hot statement compiled once for a dialect and run on the DBAPI cursor itself.

    Through ``Connection.execute()`` queueing, claiming and finishing an execution cost 0.63 ms
    of CPU on SQLite where the same statements on the bare driver take 0.14 ms: the execution
    context, cache-key lookup and result wrapping are most of it. Values still go through each
    type's own bind and result processors; `Store._driver_errors` raises a driver error as
    SQLAlchemy's, so callers see what ``Connection.execute()`` would give them.
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
            rows = cursor.fetchall() if cursor.description is not None else []
        finally:
            cursor.close()
        return [
            {
                key: value if process is None or value is None else process(value)
                for (key, process), value in zip(self._columns, row, strict=True)
            }
            for row in rows
        ]


def _move_statement(
    from_statuses: tuple[ExecutionStatus, ...], values: dict[str, Any]
) -> sa.Update:
    # SQL-expression values are module constants (like _NEXT_ATTEMPT): keyed by identity.
    shape = tuple(
        (key, id(value) if isinstance(value, sa.ClauseElement) else None)
        for key, value in sorted(values.items())
    )
    key = (from_statuses, shape)
    statement = _MOVE_STATEMENTS.get(key)
    if statement is None:
        assignments = {
            name: value
            if isinstance(value, sa.ClauseElement)
            else sa.bindparam(name, type_=executions.c[name].type)
            for name, value in values.items()
        }
        statement = (
            executions.update()
            .where(
                executions.c.id == sa.bindparam("execution_id"),
                # Statuses are ours, not input: literal SQL spares an expanding IN per call.
                sa.or_(
                    *(
                        executions.c.status == sa.literal_column(f"'{status.value}'")
                        for status in from_statuses
                    )
                ),
            )
            .values(**assignments)
            .returning(*executions.c)
        )
        _MOVE_STATEMENTS[key] = statement
    return statement


_EXECUTION_FIELDS = tuple(field.name for field in dataclasses.fields(Execution))


def _execution(row: Mapping[str, Any] | sa.RowMapping) -> Execution:
    values = {name: row[name] for name in _EXECUTION_FIELDS}
    values["status"] = ExecutionStatus(row["status"])
    values["reason"] = Reason(row["reason"]) if row["reason"] is not None else None
    values["args"] = tuple(row["args"] or ())
    values["limits"] = dict(row["limits"] or {})
    values["interactive"] = bool(row["interactive"])
    values["stdout_truncated"] = bool(row["stdout_truncated"])
    values["stderr_truncated"] = bool(row["stderr_truncated"])
    if row["stdin"] is not None:
        values["stdin"] = bytes(row["stdin"])
    if row["chunks"] is not None:
        values["chunks"] = [(str(stream), int(n)) for stream, n in row["chunks"]]
    return Execution(**values)


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
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Straight to the driver: through conn.exec_driver_sql() this one statement took the
        # whole execution path, 0.07-0.14 ms per transaction in a running server; 0.04 direct.
        _begin_sqlite(
            conn.connection.driver_connection,
            conn.get_execution_options().get("livecode_write", False),
        )


def _begin_sqlite(driver_connection: Any, write: bool) -> None:
    """Begin a transaction ourselves (see _configure_sqlite); a write takes the lock first."""
    driver_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")


def _split_sql(script: str) -> list[str]:
    without_comments = re.sub(r"--[^\n]*", "", script)
    return [s.strip() for s in without_comments.split(";") if s.strip()]
