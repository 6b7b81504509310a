"""Recovery: the leases of RUNNING executions and what the sweeper reads and moves.

A worker renews the leases of the executions it runs; one sweeper at a time (its lock) finds
the RUNNING ones whose lease expired and the QUEUED ones whose message should exist by now,
and moves or enqueues them again (README, "Nothing lost, nothing stuck"; livecode/sweeper.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import sqlalchemy as sa

from livecode.store.engine import DATABASE_DOWN, Database
from livecode.store.fastsql import FastPath
from livecode.store.records import Execution
from livecode.store.statements import move
from livecode.tables import executions
from runners import ExecutionStatus

# pg_try_advisory_lock's key for the one sweeper at a time (any number, the same everywhere).
SWEEPER_LOCK_KEY = 0x6C697665  # "live"


class Recovery:
    """Leases and the sweeper's reads and moves (Store.recovery). Thread-safe."""

    def __init__(self, database: Database, fast: FastPath) -> None:
        self._database = database
        self._fast = fast

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
        return move(
            self._fast,
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
        if self._database.engine.dialect.name != "postgresql":
            yield True
            return
        with self._database.errors(), self._database.engine.connect() as conn:
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
