"""The records of the store: a session and an execution, as the store reads and writes them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any

from runners import ExecutionStatus, Reason

__all__ = ["Execution", "Session", "SessionStatus"]


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
