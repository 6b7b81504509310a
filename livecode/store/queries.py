"""Store: every read and write of sessions and executions.

``Store`` wraps a sync SQLAlchemy ``Engine`` and is thread-safe: the server's threadpool and
the worker threads share one instance. Each method is one transaction. Each status move is one
guarded ``UPDATE ... WHERE status IN (...)``, so a retried or redelivered call does nothing
harmful: it returns ``None`` instead of moving the execution twice. The hot calls (queue,
claim, finish, read an execution) take the fast path (fastsql.py); the others SQLAlchemy's.

A database that is down or unreachable raises :class:`livecode.errors.Unavailable`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from livecode import errors
from livecode.store.apikeys import ApiKeys
from livecode.store.engine import DATABASE_DOWN, Database, create_engine
from livecode.store.fastsql import FastPath
from livecode.store.records import (
    OUTCOME_FIELDS,
    CaseResult,
    Execution,
    Session,
    SessionStatus,
)
from livecode.tables import code_sessions, executions, metadata
from runners import ExecutionStatus, Reason

__all__ = ["ANY_OWNER", "RUNS_EXHAUSTED_RETRY_S", "AtCapacity", "Store", "parse_id"]

logger = logging.getLogger(__name__)

RUNS_EXHAUSTED_RETRY_S = 86400.0
# pg_try_advisory_lock's key for the one sweeper at a time (any number, the same everywhere).
SWEEPER_LOCK_KEY = 0x6C697665  # "live"


# A quota of things held (sessions, queued executions) frees when the holder deletes or a run
# ends: the 429's Retry-After is a guess at that.
HELD_QUOTA_RETRY_S = 5.0
# An execution whose creator has `max_running` executions RUNNING is enqueued again this long
# later, by a sweeper (so within CLAIM_RETRY_S + LIVECODE_SWEEP_INTERVAL_S): each try costs a
# message and two UPDATEs.
CLAIM_RETRY_S = 1.0


class _AnyOwner:
    def __repr__(self) -> str:
        return "ANY_OWNER"


# The owner of a read that is not a tenant's: the relay replaying an execution that an edge has
# already found to be the follower's own.
ANY_OWNER = _AnyOwner()


class AtCapacity(Exception):
    """A claim refused because the execution's creator has `max_running` executions RUNNING.

    The execution stays QUEUED, and a sweeper enqueues it again after CLAIM_RETRY_S: whoever
    delivered its message drops it.
    """

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"execution {execution_id}: its creator is running all it may")
        self.execution_id = execution_id


class Store:
    """Sessions and executions in SQLite or PostgreSQL.

    Thread-safe: share one instance between threads. Each method is one transaction.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._database = Database(engine)
        self._fast = FastPath(self._database)
        self.api_keys = ApiKeys(self._database)

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10, max_overflow: int = 20) -> Store:
        """Build a store on an engine configured for the database the URL names (engine.py)."""
        return cls(create_engine(url, pool_size=pool_size, max_overflow=max_overflow))

    # -- lifecycle ---------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Create the tables that do not exist yet (``metadata.create_all``; embedded mode)."""
        self._database.create_tables()

    def apply_schema_sql(self, path: str | os.PathLike[str]) -> None:
        """Apply a DDL file (``schema.sql``) in one transaction; used by ``livecode init-db``."""
        self._database.apply_schema_sql(path)

    def ping(self) -> None:
        """Run ``SELECT 1``; raises Unavailable when the database cannot answer."""
        self._database.ping()

    def close(self) -> None:
        """Close every pooled connection (after the transaction under way, if it ends soon)."""
        self._database.close(before=self._fast.forget_connection)

    # -- sessions ----------------------------------------------------------------------------

    def create_session(
        self,
        language: str,
        source_code: str,
        *,
        owner: str = "",
        created_by: str = "",
        max_sessions: int | None = None,
    ) -> Session:
        """Insert a new ACTIVE session at version 1.

        With ``max_sessions``, a `created_by` that holds that many sessions already is refused
        with RateLimited, and nothing is written.
        """
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
            created_by=created_by,
        )
        with self._database.transaction(write=True) as conn:
            if max_sessions is not None:
                held = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(code_sessions)
                    .where(code_sessions.c.created_by == created_by)
                ).scalar_one()
                if held >= max_sessions:
                    raise errors.RateLimited(
                        f"at most {max_sessions} sessions at once; delete one first",
                        retry_after=HELD_QUOTA_RETRY_S,
                    )
            conn.execute(code_sessions.insert().values(_columns(session)))
        logger.debug("session %s created (%s)", session.id, language)
        return session

    def get_session(self, session_id: str, *, owner: str = "") -> Session:
        """Return the session; NotFound when unknown, invalid or another owner's."""
        session_id = parse_id(session_id, "session")
        with self._database.transaction() as conn:
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
        return Session.model_validate(row)

    def save_source(
        self, session_id: str, source_code: str, base_version: int | None, *, owner: str = ""
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
        with self._database.transaction(write=True) as conn:
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
        return Session.model_validate(row)

    def delete_session(self, session_id: str, *, owner: str = "") -> list[str]:
        """Delete the session and its executions; return the ids that were QUEUED or RUNNING.

        The caller cancels those (their messages and programs may still be in flight).
        Raises NotFound when there is no such session for this owner.
        """
        session_id = parse_id(session_id, "session")
        owned = [code_sessions.c.id == session_id, code_sessions.c.owner == owner]
        with self._database.transaction(write=True) as conn:
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
        tty: bool = False,
        case_inputs: Sequence[Mapping[str, Any]] | None = None,
        owner: str = "",
        created_by: str = "",
        max_running: int | None = None,
        max_runs_per_session: int | None = None,
        max_queued: int | None = None,
        judge0: Mapping[str, Any] | None = None,
        max_queued_by_creator: int | None = None,
    ) -> Execution:
        """Insert a QUEUED execution, counting it against its session's runs.

        With a session, its ``run_count`` goes up by one in the same transaction, guarded by
        ``max_runs_per_session`` when given, and a ``language`` / ``source_code`` left out are
        the session's as of that transaction. With ``max_queued``, a queue already that long
        refuses the execution; with ``max_queued_by_creator``, so does `created_by` having that
        many QUEUED. ``max_running`` is kept with the execution: `claim` holds it back while
        `created_by` has that many RUNNING. Nothing is written when this raises.

        Raises:
            NotFound: no such session for this owner.
            RateLimited: the session has used its ``max_runs_per_session`` runs, or
                `created_by` has ``max_queued_by_creator`` executions queued.
            Unavailable: ``max_queued`` executions are queued already.
        """
        if session_id is not None:
            session_id = parse_id(session_id, "session")
        elif language is None or source_code is None:
            raise RuntimeError("create_execution() without a session needs language and source")
        now = _now()
        with self._fast.transaction(write=True) as conn:
            if (
                max_queued is not None
                and self._count_in(conn, ExecutionStatus.QUEUED) >= max_queued
            ):
                raise errors.Unavailable("the queue is full; try again shortly", retry_after=5.0)
            if max_queued_by_creator is not None and (
                self._fast.run(conn, _COUNT_QUEUED_BY, {"created_by": created_by})[0]["count"]
                >= max_queued_by_creator
            ):
                raise errors.RateLimited(
                    f"at most {max_queued_by_creator} executions queued at once; "
                    "wait for some to start",
                    retry_after=HELD_QUOTA_RETRY_S,
                )
            if session_id is not None:
                session_language, session_source = self._count_run(
                    conn, session_id, max_runs_per_session, owner=owner
                )
                language = session_language if language is None else language
                source_code = session_source if source_code is None else source_code
            assert language is not None and source_code is not None
            # Fields that come later (status moves, the outcome) start at the model's defaults.
            execution = Execution(
                id=_new_id(),
                session_id=session_id,
                owner=owner,
                language=language,
                source_code=source_code,
                stdin=stdin,
                args=tuple(args),
                limits=dict(limits),
                interactive=interactive,
                tty=tty,
                case_inputs=None if case_inputs is None else [dict(case) for case in case_inputs],
                status=ExecutionStatus.QUEUED,
                queued_at=now,
                created_at=now,
                judge0=dict(judge0) if judge0 is not None else None,
                created_by=created_by,
                max_running=max_running,
            )
            values = _columns(execution)
            self._fast.run(conn, _INSERT_EXECUTION, values)
        logger.debug("execution %s queued (session %s)", execution.id, session_id)
        return execution

    def count_queued(self) -> int:
        """Return how many executions are QUEUED (all owners): the queue's length."""
        return self._count(ExecutionStatus.QUEUED)

    def count_running(self) -> int:
        """Return how many executions are RUNNING (all owners)."""
        return self._count(ExecutionStatus.RUNNING)

    def claim(
        self,
        execution_id: str,
        *,
        worker: str | None = None,
        lease_expires_at: dt.datetime | None = None,
    ) -> Execution | None:
        """Move an execution to RUNNING and count the attempt; `worker` holds it until
        `lease_expires_at` unless it renews the lease (`renew_leases`).

        Idempotent: returns None when the execution is not QUEUED (already taken, final, or
        gone), so a redelivered message does nothing.

        Raises:
            AtCapacity: its creator has its ``max_running`` executions RUNNING; it stays QUEUED,
                to be enqueued again by a sweeper after CLAIM_RETRY_S.
                (Two claims racing on PostgreSQL may both see one slot free, so a creator may
                briefly run one more per racing worker thread.)
        """
        execution = self._move(
            execution_id,
            from_statuses=(ExecutionStatus.QUEUED,),
            values={
                "status": ExecutionStatus.RUNNING.value,
                "attempt": _NEXT_ATTEMPT,
                "started_at": _now(),
                "worker": worker,
                "lease_expires_at": lease_expires_at,
            },
            guard=_BELOW_MAX_RUNNING,
        )
        if execution is not None:
            logger.debug("execution %s claimed (attempt %d)", execution.id, execution.attempt)
            return execution
        try:
            still = self.get_execution(execution_id, owner=ANY_OWNER)
        except errors.NotFound:
            return None
        if still.status == ExecutionStatus.QUEUED:
            # Its message is dropped; a sweeper enqueues it again from then on, as it does a
            # retried execution after its backoff (lease_expires_at of a QUEUED one).
            self._move(
                still.id,
                from_statuses=(ExecutionStatus.QUEUED,),
                values={"lease_expires_at": _now() + dt.timedelta(seconds=CLAIM_RETRY_S)},
            )
            raise AtCapacity(still.id)
        return None

    def finish(
        self,
        execution_id: str,
        *,
        status: ExecutionStatus | str,
        attempt: int | None = None,
        **outcome: Any,
    ) -> Execution | None:
        """Write an execution's final state, from RUNNING (or QUEUED: an error before claim).

        ``outcome`` holds values of the execution's `Outcome` fields (records.py); ``chunks``,
        the output index, is ``(stream, n_chars)`` or ``(stream, n_chars, case)`` per seq
        (tuples or lists); ``cases`` holds CaseResults or their fields as dicts. With
        ``attempt``, only that attempt, still RUNNING, is ended: a worker whose lease was
        taken over ends nothing.
        Idempotent: returns None when the execution is already final (or gone).
        """
        status = ExecutionStatus(status)
        if not status.is_final:
            raise RuntimeError(f"finish() expects a final status, got {status.value}")
        unknown = outcome.keys() - OUTCOME_FIELDS
        if unknown:
            raise RuntimeError(f"finish() writes outcome fields only, got {sorted(unknown)}")
        chunks = outcome.get("chunks")
        if chunks is not None:
            outcome["chunks"] = [[str(stream), *map(int, rest)] for stream, *rest in chunks]
        cases = outcome.get("cases")
        if cases is not None:  # JSON as the record reads it back: field names, no None
            outcome["cases"] = [
                CaseResult.model_validate(case).model_dump(mode="json", exclude_none=True)
                for case in cases
            ]
        execution = self._move(
            execution_id,
            from_statuses=(
                (ExecutionStatus.RUNNING,)
                if attempt is not None
                else (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)
            ),
            values={
                "status": status.value,
                **outcome,
                "finished_at": _now(),
                "worker": None,
                "lease_expires_at": None,
            },
            attempt=attempt,
        )
        if execution is not None:
            logger.debug(
                "execution %s finished: %s (%s)", execution.id, status.value, execution.reason
            )
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
                "reason": Reason.CANCELLED.value,
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
                "reason": Reason.INTERNAL_ERROR.value,
                "stdout": "",
                "stderr": "",
                "compile_output": "",
                "chunks": [],
                "error_message": message,
                "finished_at": _now(),
                "worker": None,
                "lease_expires_at": None,
            },
        )

    # -- leases and the sweeper (README, "Nothing lost, nothing stuck") ---------------------

    def renew_leases(self, worker: str, until: dt.datetime) -> set[str]:
        """Extend the leases of the executions `worker` runs; return the ids it still holds."""
        with self._database.transaction(write=True) as conn:
            rows = conn.execute(
                executions.update()
                .where(
                    executions.c.worker == worker,
                    executions.c.status == ExecutionStatus.RUNNING.value,
                )
                .values(lease_expires_at=until)
                .returning(executions.c.id)
            ).all()
        return {row.id for row in rows}

    def expired_leases(
        self,
        now: dt.datetime | None,
        *,
        unleased_before: dt.datetime | None = None,
        limit: int = 100,
    ) -> list[Execution]:
        """RUNNING executions whose worker stopped renewing their lease (before `now`; None:
        every RUNNING one, as after an embedded restart), oldest lease first. With
        `unleased_before`, also those without a lease (claimed before leases existed) that
        started before it."""
        query = sa.select(executions).where(executions.c.status == ExecutionStatus.RUNNING.value)
        if now is not None:
            expired = executions.c.lease_expires_at < now
            if unleased_before is not None:
                expired = sa.or_(
                    expired,
                    sa.and_(
                        executions.c.lease_expires_at.is_(None),
                        executions.c.started_at < unleased_before,
                    ),
                )
            query = query.where(expired)
        with self._database.transaction() as conn:
            rows = (
                conn.execute(query.order_by(executions.c.lease_expires_at).limit(limit))
                .mappings()
                .all()
            )
        return [Execution.model_validate(row) for row in rows]

    def due_queued(
        self, now: dt.datetime, queued_before: dt.datetime, *, limit: int = 500
    ) -> list[tuple[str, int]]:
        """(id, attempt) of the QUEUED executions whose message should exist by now: queued
        before `queued_before`, or retried with a backoff that has passed."""
        lease = executions.c.lease_expires_at
        with self._database.transaction() as conn:
            rows = conn.execute(
                sa.select(executions.c.id, executions.c.attempt)
                .where(
                    executions.c.status == ExecutionStatus.QUEUED.value,
                    sa.or_(
                        sa.and_(lease.is_(None), executions.c.queued_at < queued_before),
                        lease <= now,
                    ),
                )
                .order_by(executions.c.queued_at)
                .limit(limit)
            ).all()
        return [(row.id, row.attempt) for row in rows]

    def requeue(
        self, execution_id: str, *, attempt: int, not_before: dt.datetime
    ) -> Execution | None:
        """Move attempt `attempt`, still RUNNING, back to QUEUED, to be enqueued again (by
        whoever calls this, or a sweeper from `not_before` on). None when it moved on."""
        return self._move(
            execution_id,
            from_statuses=(ExecutionStatus.RUNNING,),
            values={
                "status": ExecutionStatus.QUEUED.value,
                "started_at": None,
                "worker": None,
                "lease_expires_at": not_before,
            },
            attempt=attempt,
        )

    @contextlib.contextmanager
    def sweeper_lock(self) -> Iterator[bool]:
        """Hold the sweeper's lock for the block if no other process does; yield whether held.

        PostgreSQL: a session advisory lock, freed with its connection if this process dies.
        SQLite serves one process (embedded mode): always held.
        """
        if self.engine.dialect.name != "postgresql":
            yield True
            return
        with self._database.errors(), self.engine.connect() as conn:
            held = bool(
                conn.execute(sa.select(sa.func.pg_try_advisory_lock(SWEEPER_LOCK_KEY))).scalar()
            )
            conn.commit()
            try:
                yield held
            finally:
                if held:
                    with contextlib.suppress(*DATABASE_DOWN):  # a lost connection let go of it
                        conn.execute(sa.select(sa.func.pg_advisory_unlock(SWEEPER_LOCK_KEY)))
                        conn.commit()

    def check_schema(self) -> None:
        """Raise SchemaMissing unless every table and column of tables.py exists."""
        with self._database.errors():
            inspector = sa.inspect(self.engine)
            for table in metadata.tables.values():
                if not inspector.has_table(table.name):
                    raise errors.SchemaMissing(f"the table {table.name} is missing")
                present = {column["name"] for column in inspector.get_columns(table.name)}
                missing = [column.name for column in table.columns if column.name not in present]
                if missing:
                    raise errors.SchemaMissing(
                        f"the table {table.name} lacks {', '.join(missing)} (an older schema)"
                    )

    def unfinished(self) -> tuple[list[str], list[str]]:
        """Ids of the QUEUED and of the RUNNING executions, oldest first."""
        with self._database.transaction() as conn:
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

    def get_execution(self, execution_id: str, *, owner: str | _AnyOwner = "") -> Execution:
        """Return the execution; NotFound when unknown, invalid or another owner's.

        ``owner=ANY_OWNER`` reads whoever's it is: only for a caller that has checked the
        owner already (the relay, after an edge's own read) or acts for none (the executor).
        """
        execution_id = parse_id(execution_id, "execution")
        with self._fast.transaction(one_statement=True) as conn:
            if isinstance(owner, _AnyOwner):
                rows = self._fast.run(conn, _GET_ANY_EXECUTION, {"execution_id": execution_id})
            else:
                parameters = {"execution_id": execution_id, "owner": owner}
                rows = self._fast.run(conn, _GET_EXECUTION, parameters)
        if not rows:
            raise errors.NotFound("execution not found")
        return Execution.model_validate(rows[0])

    def list_executions(
        self, session_id: str, *, owner: str = "", limit: int = 50, before: str | None = None
    ) -> list[Execution]:
        """Return a session's executions, newest first (``created_at``, then id).

        ``before`` is an execution id of the same session: only executions created before it
        are listed (the next page).

        Raises:
            NotFound: no such session for this owner, or ``before`` is no execution of it.
            InvalidValue: ``limit`` below 1, or ``before`` not an id.
        """
        if limit < 1:
            raise errors.InvalidValue("limit must be at least 1")
        session_id = parse_id(session_id, "session")
        with self._database.transaction() as conn:
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
                if cursor is None:  # a cursor is a resource: its absence is a 404
                    raise errors.NotFound("before: no such execution in this session")
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
        return [Execution.model_validate(row) for row in rows]

    # -- helpers -----------------------------------------------------------------------------

    def _count(self, status: ExecutionStatus) -> int:
        with self._fast.transaction(one_statement=True) as conn:
            return self._count_in(conn, status)

    def _count_in(self, conn: Any, status: ExecutionStatus) -> int:
        return int(self._fast.run(conn, _COUNT_STATUS, {"status": status.value})[0]["count"])

    def _move(
        self,
        execution_id: str,
        *,
        from_statuses: tuple[ExecutionStatus, ...],
        values: dict[str, Any],
        attempt: int | None = None,
        guard: sa.ColumnElement[bool] | None = None,
    ) -> Execution | None:
        """One guarded UPDATE of an execution's status (and, given, its attempt); None when
        the guard does not hold."""
        try:
            execution_id = parse_id(execution_id, "execution")
        except errors.NotFound:
            return None
        statement = _move_statement(from_statuses, values, attempt is not None, guard)
        parameters = {
            key: value for key, value in values.items() if not isinstance(value, sa.ClauseElement)
        }
        parameters["execution_id"] = execution_id
        if attempt is not None:
            parameters["b_attempt"] = attempt
        with self._fast.transaction(write=True, one_statement=True) as conn:
            rows = self._fast.run(conn, statement, parameters)
        return Execution.model_validate(rows[0]) if rows else None

    def _count_run(
        self, conn: Any, session_id: str, max_runs_per_session: int | None, *, owner: str
    ) -> tuple[str, str]:
        updated = self._fast.run(
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
        if not self._fast.run(
            conn, _SESSION_EXISTS, {"b_session_id": session_id, "b_owner": owner}
        ):
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


def _columns(record: Session | Execution) -> dict[str, Any]:
    """The record's values by column name (a dump would leave its Private fields out)."""
    # pydantic keeps a model's field values in its __dict__: 0.16 us, where getattr() on each
    # of an execution's 28 fields took 1.5.
    return dict(record.__dict__)


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
_GET_ANY_EXECUTION = sa.select(executions).where(executions.c.id == sa.bindparam("execution_id"))
_COUNT_QUEUED_BY = (
    sa.select(sa.func.count().label("count"))
    .select_from(executions)
    .where(
        executions.c.created_by == sa.bindparam("created_by"),
        executions.c.status == sa.literal_column(f"'{ExecutionStatus.QUEUED.value}'"),
    )
)
# A claim's guard: no cap, or fewer of the creator's executions RUNNING than the cap.
_running = executions.alias("running")
_BELOW_MAX_RUNNING = sa.or_(
    executions.c.max_running.is_(None),
    sa.select(sa.func.count())
    .select_from(_running)
    .where(
        _running.c.created_by == executions.c.created_by,
        _running.c.status == sa.literal_column(f"'{ExecutionStatus.RUNNING.value}'"),
    )
    .scalar_subquery()
    < executions.c.max_running,
)
_MOVE_STATEMENTS: dict[tuple[Any, ...], sa.Update] = {}


def _move_statement(
    from_statuses: tuple[ExecutionStatus, ...],
    values: dict[str, Any],
    of_attempt: bool,
    guard: sa.ColumnElement[bool] | None = None,
) -> sa.Update:
    # SQL-expression values and guards are module constants (like _NEXT_ATTEMPT): keyed by
    # identity.
    shape = tuple(
        (key, id(value) if isinstance(value, sa.ClauseElement) else None)
        for key, value in sorted(values.items())
    )
    key = (from_statuses, shape, of_attempt, id(guard))
    statement = _MOVE_STATEMENTS.get(key)
    if statement is None:
        assignments = {
            name: value
            if isinstance(value, sa.ClauseElement)
            else sa.bindparam(name, type_=executions.c[name].type)
            for name, value in values.items()
        }
        guards = [executions.c.attempt == sa.bindparam("b_attempt")] if of_attempt else []
        statement = (
            executions.update()
            .where(
                *guards,
                executions.c.id == sa.bindparam("execution_id"),
                # Statuses are ours, not input: literal SQL spares an expanding IN per call.
                sa.or_(
                    *(
                        executions.c.status == sa.literal_column(f"'{status.value}'")
                        for status in from_statuses
                    )
                ),
                *([guard] if guard is not None else []),
            )
            .values(**assignments)
            .returning(*executions.c)
        )
        _MOVE_STATEMENTS[key] = statement
    return statement
