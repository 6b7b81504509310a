"""What the client hands back: sessions, executions, languages and an execution's events.

Frozen values built from the server's JSON (docs/protocol.md). Each event keeps the JSON
it came from in `raw` (not compared, not shown), for callers that pass events on unchanged,
as `livecode run --json` does. Field values are the server's own strings (`status`, `reason`,
`stream`): an unknown value from a newer server is kept, not refused.
"""

from __future__ import annotations

from collections.abc import Mapping

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


class _Value:
    """A frozen value, compared, hashed and shown by its `_fields` (`raw` is none of them).

    What `@dataclass(frozen=True, slots=True)` gives, written out: importing dataclasses (it
    imports inspect) and generating these classes' methods took 15 ms of the start of
    `livecode run`, which must stay within 100 ms of `python3 hello.py` (bench/bench_cli.py).
    """

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _astuple(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot assign to {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Value)
        return self._astuple() == other._astuple()

    def __hash__(self) -> int:
        return hash(self._astuple())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({shown})"

    # copy and pickle: the default state would be set with setattr, which a frozen value refuses
    def __getstate__(self) -> tuple[object, ...]:
        names: tuple[str, ...] = self.__slots__
        return tuple(getattr(self, name) for name in names)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        names: tuple[str, ...] = self.__slots__
        for name, value in zip(names, state, strict=True):
            object.__setattr__(self, name, value)


class Limits(_Value):
    """Limits a run asks for; each may only be lower than the server's own (None: the server's)."""

    __slots__ = _fields = ("timeout_s", "memory_mb", "max_processes", "output_limit_bytes")
    timeout_s: float | None
    memory_mb: int | None
    max_processes: int | None
    output_limit_bytes: int | None

    def __init__(
        self,
        timeout_s: float | None = None,
        memory_mb: int | None = None,
        max_processes: int | None = None,
        output_limit_bytes: int | None = None,
    ) -> None:
        self._set(
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            max_processes=max_processes,
            output_limit_bytes=output_limit_bytes,
        )

    def to_json(self) -> dict[str, Any]:
        """The `limits` object of a run message, without the values not given."""
        values = {name: getattr(self, name) for name in self._fields}
        return {name: value for name, value in values.items() if value is not None}


class Session(_Value):
    """A code session: the source as last saved and its version."""

    __slots__ = _fields = (
        "id",
        "language",
        "source_code",
        "status",
        "version",
        "created_at",
        "updated_at",
    )
    id: str
    language: str
    source_code: str
    status: str
    version: int
    created_at: str | None
    updated_at: str | None

    def __init__(
        self,
        id: str,
        language: str,
        source_code: str,
        status: str,
        version: int,
        created_at: str | None = None,
        updated_at: str | None = None,
    ) -> None:
        self._set(
            id=id,
            language=language,
            source_code=source_code,
            status=status,
            version=version,
            created_at=created_at,
            updated_at=updated_at,
        )

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


class Saved(_Value):
    """The answer to an autosave: the version the source was committed as."""

    __slots__ = _fields = ("session_id", "version", "updated_at")
    session_id: str
    version: int
    updated_at: str | None

    def __init__(self, session_id: str, version: int, updated_at: str | None = None) -> None:
        self._set(session_id=session_id, version=version, updated_at=updated_at)


class Language(_Value):
    """A language the server runs, with the toolchain version it detected at start."""

    __slots__ = _fields = ("id", "name", "version", "aliases", "available")
    id: str
    name: str
    version: str | None
    aliases: tuple[str, ...]
    available: bool

    def __init__(
        self, id: str, name: str, version: str | None, aliases: tuple[str, ...], available: bool
    ) -> None:
        self._set(id=id, name=name, version=version, aliases=aliases, available=available)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Language:
        return cls(
            id=data["id"],
            name=data.get("name", data["id"]),
            version=data.get("version"),
            aliases=tuple(data.get("aliases", ())),
            available=bool(data.get("available", True)),
        )


class Execution(_Value):
    """One run of a source, as the server stores it (final in a `finished` event)."""

    __slots__ = _fields = (
        "execution_id",
        "status",
        "session_id",
        "language",
        "reason",
        "exit_code",
        "signal",
        "stdout",
        "stderr",
        "compile_output",
        "stdout_truncated",
        "stderr_truncated",
        "execution_time_ms",
        "cpu_time_ms",
        "memory_kb",
        "attempt",
        "interactive",
        "tty",
        "cols",
        "rows",
        "error",
        "queued_at",
        "started_at",
        "finished_at",
        "created_at",
    )
    execution_id: str
    status: str
    session_id: str | None
    language: str | None
    reason: str | None
    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    compile_output: str
    stdout_truncated: bool
    stderr_truncated: bool
    execution_time_ms: int | None
    cpu_time_ms: int | None
    memory_kb: int | None
    attempt: int | None
    interactive: bool
    tty: bool
    # A tty run's terminal size when its program started (known once it has ended; while it
    # runs, the size asked), None without tty.
    cols: int | None
    rows: int | None
    error: str | None
    queued_at: str | None
    started_at: str | None
    finished_at: str | None
    created_at: str | None

    def __init__(
        self,
        execution_id: str,
        status: str,
        session_id: str | None = None,
        language: str | None = None,
        reason: str | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
        stdout: str = "",
        stderr: str = "",
        compile_output: str = "",
        stdout_truncated: bool = False,
        stderr_truncated: bool = False,
        execution_time_ms: int | None = None,
        cpu_time_ms: int | None = None,
        memory_kb: int | None = None,
        attempt: int | None = None,
        interactive: bool = False,
        tty: bool = False,
        cols: int | None = None,
        rows: int | None = None,
        error: str | None = None,
        queued_at: str | None = None,
        started_at: str | None = None,
        finished_at: str | None = None,
        created_at: str | None = None,
    ) -> None:
        self._set(
            execution_id=execution_id,
            status=status,
            session_id=session_id,
            language=language,
            reason=reason,
            exit_code=exit_code,
            signal=signal,
            stdout=stdout,
            stderr=stderr,
            compile_output=compile_output,
            stdout_truncated=stdout_truncated,
            stderr_truncated=stderr_truncated,
            execution_time_ms=execution_time_ms,
            cpu_time_ms=cpu_time_ms,
            memory_kb=memory_kb,
            attempt=attempt,
            interactive=interactive,
            tty=tty,
            cols=cols,
            rows=rows,
            error=error,
            queued_at=queued_at,
            started_at=started_at,
            finished_at=finished_at,
            created_at=created_at,
        )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Execution:
        known = {name: data[name] for name in cls._fields if data.get(name) is not None}
        return cls(**known)


class Status(_Value):
    """`status` event: the execution moved (QUEUED, RUNNING, then a final status)."""

    _fields = ("execution_id", "status", "attempt")
    __slots__ = (*_fields, "raw")
    execution_id: str
    status: str
    attempt: int | None
    raw: dict[str, Any]

    def __init__(
        self,
        execution_id: str,
        status: str,
        attempt: int | None = None,
        raw: dict[str, Any] | None = None,
    ) -> None:
        self._set(execution_id=execution_id, status=status, attempt=attempt, raw=raw or {})


class Output(_Value):
    """`output` event: one chunk of `stdout`, `stderr` or `compile`, numbered by seq."""

    _fields = ("execution_id", "stream", "seq", "data")
    __slots__ = (*_fields, "raw")
    execution_id: str
    stream: str
    seq: int
    data: str
    raw: dict[str, Any]

    def __init__(
        self,
        execution_id: str,
        stream: str,
        seq: int,
        data: str,
        raw: dict[str, Any] | None = None,
    ) -> None:
        self._set(execution_id=execution_id, stream=stream, seq=seq, data=data, raw=raw or {})


class Finished(_Value):
    """`finished` event, the last of an execution: its final state as stored."""

    _fields = ("execution",)
    __slots__ = (*_fields, "raw")
    execution: Execution
    raw: dict[str, Any]

    def __init__(self, execution: Execution, raw: dict[str, Any] | None = None) -> None:
        self._set(execution=execution, raw=raw or {})

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
