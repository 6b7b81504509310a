"""SQLAlchemy Core tables of the store, portable to SQLite and PostgreSQL.

``schema.sql`` is the PostgreSQL DDL of exactly these tables; ``tests/test_schema.py`` proves
they match. Change both together.

Conventions:

- ids are canonical uuid4 strings (36 characters), generated in Python, so JSON shows them as
  they are stored and both databases hold the same thing;
- timestamps are timezone-aware UTC datetimes (:class:`UTCDateTime`): ``timestamptz`` in
  PostgreSQL, an ISO-like UTC string in SQLite;
- JSON values (``args``, ``limits``, ``chunks``, ``judge0``, ``case_inputs``, ``cases``) are
  stored as JSON text (:class:`JSONText`).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from runners import ExecutionStatus, Reason

__all__ = [
    "ID_LENGTH",
    "JSONText",
    "api_keys",
    "UTCDateTime",
    "code_sessions",
    "executions",
    "metadata",
]

ID_LENGTH = 36


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """A timezone-aware datetime, stored in UTC and always read back as aware UTC.

    SQLite has no time zones: values are converted to UTC before they are written (so they
    sort as text) and tagged UTC when read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, got naive {value!r}")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class JSONText(sa.TypeDecorator[Any]):
    """A JSON value stored as compact text (``TEXT`` on both databases)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return json.loads(value)


def _one_of(column: str, values: type[enum.StrEnum]) -> str:
    """A CHECK that the column holds one of the enum's values (or NULL, which CHECK lets by)."""
    return "{} IN ({})".format(column, ", ".join(f"'{value.value}'" for value in values))


metadata = sa.MetaData()

code_sessions = sa.Table(
    "code_sessions",
    metadata,
    sa.Column("id", sa.String(ID_LENGTH), primary_key=True),
    sa.Column("owner", sa.Text, nullable=False, server_default=""),
    sa.Column("language", sa.String(32), nullable=False),
    sa.Column("source_code", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="ACTIVE"),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("run_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Who created it: "key:NAME", or "addr:ADDRESS" without keys (quotas count by it).
    sa.Column("created_by", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_code_sessions_owner", "owner"),
    sa.Index("ix_code_sessions_created_by", "created_by"),
)

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("id", sa.String(ID_LENGTH), primary_key=True),
    sa.Column(
        "session_id",
        sa.String(ID_LENGTH),
        sa.ForeignKey("code_sessions.id", ondelete="CASCADE"),
        nullable=True,
    ),
    sa.Column("owner", sa.Text, nullable=False, server_default=""),
    sa.Column("language", sa.String(32), nullable=False),
    sa.Column("source_code", sa.Text, nullable=False),
    sa.Column("stdin", sa.LargeBinary, nullable=True),
    sa.Column("args", JSONText, nullable=False, server_default="[]"),
    sa.Column("limits", JSONText, nullable=False, server_default="{}"),
    sa.Column("interactive", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("status", sa.String(16), nullable=False, server_default=ExecutionStatus.QUEUED.value),
    sa.Column("reason", sa.String(32), nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("signal", sa.Integer, nullable=True),
    sa.Column("stdout", sa.Text, nullable=True),
    sa.Column("stderr", sa.Text, nullable=True),
    sa.Column("compile_output", sa.Text, nullable=True),
    sa.Column("stdout_truncated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("stderr_truncated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("execution_time_ms", sa.Integer, nullable=True),
    sa.Column("cpu_time_ms", sa.Integer, nullable=True),
    sa.Column("memory_kb", sa.Integer, nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("chunks", JSONText, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("queued_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Added after the first release (store/engine.py and schema.sql add them to an older
    # database). A Judge0 submission's own request fields (livecode/compat/judge0.py); NULL
    # otherwise:
    sa.Column("judge0", JSONText, nullable=True),
    sa.Column("tty", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("case_inputs", JSONText, nullable=True),
    sa.Column("cases", JSONText, nullable=True),
    # The worker process running it and until when (RUNNING); when a sweeper may enqueue it
    # again if its message is gone (QUEUED after a retry). Last, so that `init-db` adds them
    # to an older table in the same order as it creates them in a new one.
    sa.Column("worker", sa.Text, nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    # Who ran it ("key:NAME", or "addr:ADDRESS" without keys), and the most executions of theirs
    # that may be RUNNING at once, as it was when this one was queued (NULL: no cap).
    sa.Column("created_by", sa.Text, nullable=False, server_default=""),
    sa.Column("max_running", sa.Integer, nullable=True),
    # A tty run's terminal size when its program starts, as the run asked (NULL: 80x24).
    sa.Column("tty_cols", sa.Integer, nullable=True),
    sa.Column("tty_rows", sa.Integer, nullable=True),
    sa.CheckConstraint(_one_of("status", ExecutionStatus), name="executions_status_check"),
    sa.CheckConstraint(_one_of("reason", Reason), name="executions_reason_check"),
    sa.Index("ix_executions_session_id_created_at", "session_id", "created_at"),
    sa.Index("ix_executions_status", "status"),
    sa.Index("ix_executions_created_by_status", "created_by", "status"),
)

# API keys (SPEC.md, Security): each is a tenant, named by `name`, which is also the `owner` of
# what it creates; never reused, so a revoked key's data stays its own. The secret is kept only
# as its SHA-256; `prefix` is its first characters, shown by `livecode keys list`. The quota
# columns override LIVECODE_TENANT_* for this key (NULL: the default).
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("runs_per_minute", sa.Integer, nullable=True),
    sa.Column("max_running", sa.Integer, nullable=True),
    sa.Column("max_queued", sa.Integer, nullable=True),
    sa.Column("max_sessions", sa.Integer, nullable=True),
    sa.Index("ux_api_keys_prefix", "prefix", unique=True),
)
