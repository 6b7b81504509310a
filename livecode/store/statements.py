"""The statements the store runs most, built once, and the pieces every query shares.

Building a statement and its cache key costs more CPU than running it on SQLite: the hot ones
are built once, with their values as bind parameters, and run on the fast path (fastsql.py).
A status move is one guarded UPDATE (:func:`move`), so a retried or redelivered call does
nothing harmful.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import sqlalchemy as sa

from livecode import errors
from livecode.store.fastsql import FastPath
from livecode.store.records import Execution, Session
from livecode.tables import code_sessions, executions
from runners import ExecutionStatus

_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
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


def columns(record: Session | Execution) -> dict[str, Any]:
    """The record's values by column name (a dump would leave its Private fields out)."""
    # pydantic keeps a model's field values in its __dict__: 0.16 us, where getattr() on each
    # of an execution's 28 fields took 1.5.
    return dict(record.__dict__)


INT_MAX = 2**31 - 1
INSERT_EXECUTION = executions.insert()
NEXT_ATTEMPT = executions.c.attempt + 1
COUNT_STATUS = (
    sa.select(sa.func.count().label("count"))
    .select_from(executions)
    .where(executions.c.status == sa.bindparam("status"))
)
COUNT_RUN = (
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
SESSION_RUNS = sa.select(code_sessions.c.run_count).where(
    code_sessions.c.id == sa.bindparam("b_session_id"),
    code_sessions.c.owner == sa.bindparam("b_owner"),
)
GET_EXECUTION = sa.select(executions).where(
    executions.c.id == sa.bindparam("execution_id"), executions.c.owner == sa.bindparam("owner")
)
GET_ANY_EXECUTION = sa.select(executions).where(executions.c.id == sa.bindparam("execution_id"))
COUNT_QUEUED_BY = (
    sa.select(sa.func.count().label("count"))
    .select_from(executions)
    .where(
        executions.c.created_by == sa.bindparam("created_by"),
        executions.c.status == sa.literal_column(f"'{ExecutionStatus.QUEUED.value}'"),
    )
)
# A claim's guard: no cap, or fewer of the creator's executions RUNNING than the cap.
_running = executions.alias("running")
BELOW_MAX_RUNNING = sa.or_(
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
_COUNTED_INSERTS: dict[tuple[bool, bool], sa.Insert] = {}
_QUEUED = executions.c.status == sa.literal_column(f"'{ExecutionStatus.QUEUED.value}'")


def counted_insert(queue_cap: bool, creator_cap: bool) -> sa.Insert:
    """PostgreSQL: a session's run counted (COUNT_RUN's guard, and with `queue_cap` and
    `creator_cap` the queue's and the creator's QUEUED below ``b_max_queued`` and
    ``b_max_queued_by``) and the execution inserted, in one statement. Its binds are the
    execution's columns (``language`` and ``source_code`` None: the session's) and COUNT_RUN's;
    it returns the language and source inserted, and no row when a guard refused."""
    statement = _COUNTED_INSERTS.get((queue_cap, creator_cap))
    if statement is not None:
        return statement
    guards = [
        code_sessions.c.id == sa.bindparam("b_session_id"),
        code_sessions.c.owner == sa.bindparam("b_owner"),
        code_sessions.c.run_count < sa.bindparam("b_cap"),
    ]
    queued = sa.select(sa.func.count()).select_from(executions)
    if queue_cap:
        guards.append(queued.where(_QUEUED).scalar_subquery() < sa.bindparam("b_max_queued"))
    if creator_cap:
        by_creator = executions.c.created_by == sa.bindparam("b_created_by")
        guards.append(
            queued.where(by_creator, _QUEUED).scalar_subquery() < sa.bindparam("b_max_queued_by")
        )
    counted = (
        code_sessions.update()
        .where(*guards)
        .values(run_count=code_sessions.c.run_count + 1)
        .returning(code_sessions.c.language, code_sessions.c.source_code)
        .cte("counted")
    )
    values = [
        sa.func.coalesce(sa.bindparam(column.name, type_=column.type), counted.c[column.name])
        if column.name in ("language", "source_code")
        else sa.bindparam(column.name, type_=column.type)
        for column in executions.c
    ]
    statement = (
        executions.insert()
        .from_select(list(executions.c), sa.select(*values).select_from(counted))
        .returning(executions.c.language, executions.c.source_code)
    )
    _COUNTED_INSERTS[queue_cap, creator_cap] = statement
    return statement


def _move_statement(
    from_statuses: tuple[ExecutionStatus, ...],
    values: dict[str, Any],
    of_attempt: bool,
    guard: sa.ColumnElement[bool] | None = None,
) -> sa.Update:
    # SQL-expression values and guards are module constants (like NEXT_ATTEMPT): keyed by
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


def move(
    fast: FastPath,
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
    with fast.transaction(write=True, one_statement=True) as conn:
        rows = fast.run(conn, statement, parameters)
    return Execution.model_validate(rows[0]) if rows else None
