"""What the client hands back: sessions, executions, languages and an execution's events.

Frozen dataclasses built from the server's JSON (docs/protocol.md). Each event keeps the JSON
it came from in `raw` (not compared, not shown), for callers that pass events on unchanged,
as `livecode run --json` does. Field values are the server's own strings (`status`, `reason`,
`stream`): an unknown value from a newer server is kept, not refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

# typing costs `livecode run` 3 ms of start, and type checkers read this constant as its own.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "FINAL_STATUSES",
    "Event",
    "Execution",
    "Finished",
    "Language",
    "Limits",
    "Output",
    "Saved",
    "Session",
    "Status",
    "parse_event",
]

# Where an execution ends (QUEUED and RUNNING are the others).
FINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"})


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits a run asks for; each may only be lower than the server's own (None: the server's)."""

    timeout_s: float | None = None
    memory_mb: int | None = None
    max_processes: int | None = None
    output_limit_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The `limits` object of a run message, without the values not given."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Session:
    """A code session: the source as last saved and its version."""

    id: str
    language: str
    source_code: str
    status: str
    version: int
    created_at: str | None = None
    updated_at: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Session:
        return cls(
            id=data.get("session_id") or data["id"],
            language=data["language"],
            source_code=data.get("source_code", ""),
            status=data.get("status", "ACTIVE"),
            version=data["version"],
            created_at=data.get("created_at"),
            updated_at=data.get("updated_at"),
        )


@dataclass(frozen=True, slots=True)
class Saved:
    """The answer to an autosave: the version the source was committed as."""

    session_id: str
    version: int
    updated_at: str | None = None


@dataclass(frozen=True, slots=True)
class Language:
    """A language the server runs, with the toolchain version it detected at start."""

    id: str
    name: str
    version: str | None
    aliases: tuple[str, ...]
    available: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Language:
        return cls(
            id=data["id"],
            name=data.get("name", data["id"]),
            version=data.get("version"),
            aliases=tuple(data.get("aliases", ())),
            available=bool(data.get("available", True)),
        )


@dataclass(frozen=True, slots=True)
class Execution:
    """One run of a source, as the server stores it (final in a `finished` event)."""

    execution_id: str
    status: str
    session_id: str | None = None
    language: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    compile_output: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    execution_time_ms: int | None = None
    cpu_time_ms: int | None = None
    memory_kb: int | None = None
    attempt: int | None = None
    interactive: bool = False
    error: str | None = None
    queued_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    created_at: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Execution:
        known = {name: data[name] for name in _EXECUTION_FIELDS if data.get(name) is not None}
        return cls(**known)


_EXECUTION_FIELDS = tuple(f.name for f in fields(Execution))


@dataclass(frozen=True, slots=True)
class Status:
    """`status` event: the execution moved (QUEUED, RUNNING, then a final status)."""

    execution_id: str
    status: str
    attempt: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Output:
    """`output` event: one chunk of `stdout`, `stderr` or `compile`, numbered by seq."""

    execution_id: str
    stream: str
    seq: int
    data: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Finished:
    """`finished` event, the last of an execution: its final state as stored."""

    execution: Execution
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def execution_id(self) -> str:
        return self.execution.execution_id


Event = Status | Output | Finished


def parse_event(data: dict[str, Any]) -> Event | None:
    """The typed event of an execution's `status`, `output` or `finished` JSON; else None."""
    kind = data.get("type")
    if kind == "output":
        return Output(data["execution_id"], data["stream"], data["seq"], data["data"], raw=data)
    if kind == "status":
        return Status(data["execution_id"], data["status"], data.get("attempt"), raw=data)
    if kind == "finished":
        return Finished(Execution.from_json(data), raw=data)
    return None
