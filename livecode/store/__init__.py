"""The store: every read and write of sessions and executions, in SQLite or PostgreSQL.

Its rooms, in the order a call goes through them::

    queries.py      Store: sessions and executions; each status move is one guarded UPDATE
    recovery.py     Recovery (Store.recovery): leases, and what the sweeper finds and moves
    apikeys.py      ApiKeys (Store.api_keys): the API keys, kept as hashes
    statements.py   the hot statements, built once; ids; the guarded move
    records.py      Session and Execution, the rows as the store reads and writes them
    fastsql.py      the hot statements, compiled once and run on the DBAPI connection itself
    engine.py       the engine for a URL (SQLite pragmas, the pool), transactions, schema.sql
"""

from __future__ import annotations

from livecode.store.apikeys import QUOTA_COLUMNS, ApiKeys
from livecode.store.queries import (
    ANY_OWNER,
    RUNS_EXHAUSTED_RETRY_S,
    AtCapacity,
    Store,
    parse_id,
)
from livecode.store.records import ApiKey, Execution, Session, SessionStatus
from livecode.store.statements import utc_now
from runners import ExecutionStatus

__all__ = [
    "ANY_OWNER",
    "QUOTA_COLUMNS",
    "RUNS_EXHAUSTED_RETRY_S",
    "ApiKey",
    "ApiKeys",
    "AtCapacity",
    "Execution",
    "ExecutionStatus",
    "Session",
    "SessionStatus",
    "Store",
    "parse_id",
    "utc_now",
]
