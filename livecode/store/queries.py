"""Store: every read and write of sessions and executions.

``Store`` wraps a sync SQLAlchemy ``Engine`` and is thread-safe: the server's threadpool and
the worker threads share one instance. Each method is one transaction. Each status move is one
guarded ``UPDATE ... WHERE status IN (...)``, so a retried or redelivered call does nothing
harmful: it returns ``None`` instead of moving the execution twice. The hot calls (queue,
claim, finish, read an execution) take the fast path (fastsql.py) with statements built once
(statements.py); the others SQLAlchemy's. Leases and the sweeper's queries are
``Store.recovery`` (recovery.py), the API keys ``Store.api_keys`` (apikeys.py).

A database that is down or unreachable raises :class:`livecode.errors.Unavailable`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from livecode import errors
from livecode.store import statements
from livecode.store.apikeys import ApiKeys
from livecode.store.engine import Database, create_engine
from livecode.store.fastsql import FastPath
from livecode.store.records import (
    OUTCOME_FIELDS,
    CaseResult,
    Execution,
    Session,
    SessionStatus,
)
from livecode.store.recovery import Recovery
from livecode.store.statements import columns, move, new_id, parse_id, utc_now
from livecode.tables import code_sessions, executions, metadata
from runners import ExecutionStatus, Reason

__all__ = ["ANY_OWNER", "RUNS_EXHAUSTED_RETRY_S", "AtCapacity", "Store", "parse_id"]

logger = logging.getLogger(__name__)

RUNS_EXHAUSTED_RETRY_S = 86400.0


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
        self.recovery = Recovery(self._database, self._fast)

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
        now = utc_now()
        session = Session(
            id=new_id(),
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
            conn.execute(code_sessions.insert().values(columns(session)))
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
                        updated_at=utc_now(),
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
        tty_size: tuple[int, int] | None = None,
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
        `created_by` has that many RUNNING. ``tty_size`` is a tty run's (cols, rows) when its
        program starts. Nothing is written when this raises.

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
        now = utc_now()
        # Fields that come later (status moves, the outcome) start at the model's defaults; a
        # language and source left out are the session's, filled in once its run is counted.
        execution = Execution(
            id=new_id(),
            session_id=session_id,
            owner=owner,
            language=language or "",
            source_code=source_code or "",
            stdin=stdin,
            args=tuple(args),
            limits=dict(limits),
            interactive=interactive,
            tty=tty,
            tty_cols=tty_size[0] if tty_size is not None else None,
            tty_rows=tty_size[1] if tty_size is not None else None,
            case_inputs=None if case_inputs is None else [dict(case) for case in case_inputs],
            status=ExecutionStatus.QUEUED,
            queued_at=now,
            created_at=now,
            judge0=dict(judge0) if judge0 is not None else None,
            created_by=created_by,
            max_running=max_running,
        )
        values = {**columns(execution), "language": language, "source_code": source_code}
        if session_id is not None and self.engine.dialect.name == "postgresql":
            execution = self._insert_counted(
                execution, values, max_runs_per_session, max_queued, max_queued_by_creator
            )
        else:
            with self._fast.transaction(write=True) as conn:
                self._refuse_when_full(conn, max_queued, max_queued_by_creator, created_by)
                if session_id is not None:
                    session_language, session_source = self._count_run(
                        conn, session_id, max_runs_per_session, owner=owner
                    )
                    session_values = {
                        "language": session_language if language is None else language,
                        "source_code": session_source if source_code is None else source_code,
                    }
                    values.update(session_values)
                    execution = execution.model_copy(update=session_values)
                self._fast.run(conn, statements.INSERT_EXECUTION, values)
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
        execution = move(
            self._fast,
            execution_id,
            from_statuses=(ExecutionStatus.QUEUED,),
            values={
                "status": ExecutionStatus.RUNNING.value,
                "attempt": statements.NEXT_ATTEMPT,
                "started_at": utc_now(),
                "worker": worker,
                "lease_expires_at": lease_expires_at,
            },
            guard=statements.BELOW_MAX_RUNNING,
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
            move(
                self._fast,
                still.id,
                from_statuses=(ExecutionStatus.QUEUED,),
                values={"lease_expires_at": utc_now() + dt.timedelta(seconds=CLAIM_RETRY_S)},
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
        execution = move(
            self._fast,
            execution_id,
            from_statuses=(
                (ExecutionStatus.RUNNING,)
                if attempt is not None
                else (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)
            ),
            values={
                "status": status.value,
                **outcome,
                "finished_at": utc_now(),
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
        execution = move(
            self._fast,
            execution_id,
            from_statuses=(ExecutionStatus.QUEUED,),
            values={
                "status": ExecutionStatus.CANCELLED.value,
                "reason": Reason.CANCELLED.value,
                "stdout": "",
                "stderr": "",
                "chunks": [],
                "finished_at": utc_now(),
            },
        )
        if execution is not None:
            logger.debug("execution %s cancelled while queued", execution.id)
        return execution

    def fail(self, execution_id: str, message: str) -> Execution | None:
        """End a QUEUED or RUNNING execution as FAILED / ``internal_error``: our fault, not the
        program's. None when it is final already."""
        return move(
            self._fast,
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
                "finished_at": utc_now(),
                "worker": None,
                "lease_expires_at": None,
            },
        )

    def get_execution(self, execution_id: str, *, owner: str | _AnyOwner = "") -> Execution:
        """Return the execution; NotFound when unknown, invalid or another owner's.

        ``owner=ANY_OWNER`` reads whoever's it is: only for a caller that has checked the
        owner already (the relay, after an edge's own read) or acts for none (the executor).
        """
        execution_id = parse_id(execution_id, "execution")
        with self._fast.transaction(one_statement=True) as conn:
            if isinstance(owner, _AnyOwner):
                rows = self._fast.run(
                    conn, statements.GET_ANY_EXECUTION, {"execution_id": execution_id}
                )
            else:
                parameters = {"execution_id": execution_id, "owner": owner}
                rows = self._fast.run(conn, statements.GET_EXECUTION, parameters)
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
        return int(
            self._fast.run(conn, statements.COUNT_STATUS, {"status": status.value})[0]["count"]
        )

    def _insert_counted(
        self,
        execution: Execution,
        values: dict[str, Any],
        max_runs_per_session: int | None,
        max_queued: int | None,
        max_queued_by_creator: int | None,
    ) -> Execution:
        """PostgreSQL: the session's run counted, the guards checked and the execution inserted
        in one statement, committed on its own: one round trip where a transaction took five
        (0.15 ms less CPU a run for the web process, 0.1 for the database). Refused, it wrote
        nothing, and a read tells why."""
        assert execution.session_id is not None
        statement = statements.counted_insert(
            max_queued is not None, max_queued_by_creator is not None
        )
        parameters = {
            **values,
            "b_session_id": execution.session_id,
            "b_owner": execution.owner,
            "b_cap": _run_cap(max_runs_per_session),
            "b_max_queued": max_queued,
            "b_max_queued_by": max_queued_by_creator,
            "b_created_by": execution.created_by,
        }
        with self._fast.transaction(write=True, one_statement=True) as conn:
            inserted = self._fast.run(conn, statement, parameters)
        if inserted:
            return execution.model_copy(update=inserted[0])
        with self._fast.transaction() as conn:
            self._refuse_when_full(conn, max_queued, max_queued_by_creator, execution.created_by)
            self._refuse_run(conn, execution.session_id, max_runs_per_session, execution.owner)
        # Nothing refuses it now: the queue was full a moment ago.
        raise _queue_full()

    def _refuse_when_full(
        self,
        conn: Any,
        max_queued: int | None,
        max_queued_by_creator: int | None,
        created_by: str,
    ) -> None:
        """Raise when the queue, or `created_by`'s part of it, is at its cap."""
        if max_queued is not None and self._count_in(conn, ExecutionStatus.QUEUED) >= max_queued:
            raise _queue_full()
        if max_queued_by_creator is not None and (
            self._fast.run(conn, statements.COUNT_QUEUED_BY, {"created_by": created_by})[0]["count"]
            >= max_queued_by_creator
        ):
            raise errors.RateLimited(
                f"at most {max_queued_by_creator} executions queued at once; "
                "wait for some to start",
                retry_after=HELD_QUOTA_RETRY_S,
            )

    def _count_run(
        self, conn: Any, session_id: str, max_runs_per_session: int | None, *, owner: str
    ) -> tuple[str, str]:
        updated = self._fast.run(
            conn,
            statements.COUNT_RUN,
            {"b_session_id": session_id, "b_owner": owner, "b_cap": _run_cap(max_runs_per_session)},
        )
        if updated:
            return updated[0]["language"], updated[0]["source_code"]
        self._refuse_run(conn, session_id, max_runs_per_session, owner)
        raise RuntimeError("a session's run was not counted, and nothing refuses it")

    def _refuse_run(
        self, conn: Any, session_id: str, max_runs_per_session: int | None, owner: str
    ) -> None:
        """Raise when the session is not the owner's, or has used its runs."""
        found = self._fast.run(
            conn, statements.SESSION_RUNS, {"b_session_id": session_id, "b_owner": owner}
        )
        if not found:
            raise errors.NotFound("session not found")
        if found[0]["run_count"] >= _run_cap(max_runs_per_session):
            # The cap never lifts for this session; Retry-After is set because every 429 has one.
            raise errors.RateLimited(
                f"this session has used its {max_runs_per_session} runs; create a new session",
                retry_after=RUNS_EXHAUSTED_RETRY_S,
            )


def _queue_full() -> errors.Unavailable:
    return errors.Unavailable("the queue is full; try again shortly", retry_after=5.0)


def _run_cap(max_runs_per_session: int | None) -> int:
    """A session's cap on runs as its INTEGER column can hold it (none: the largest)."""
    return min(max_runs_per_session or statements.INT_MAX, statements.INT_MAX)
