"""What a run produces: output chunks by stream, and a final Result."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Stream(enum.StrEnum):
    """Where an output chunk comes from."""

    COMPILE = "compile"
    STDOUT = "stdout"
    STDERR = "stderr"


class ExecutionStatus(enum.StrEnum):
    """Where an execution is, as SPEC.md names it: QUEUED -> RUNNING -> one of the final states.

    The one status enum of the project: the store, the tables, the events and OpenAPI use it,
    and a sandbox run's Result carries one of its final values.
    """

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self not in (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)


class Reason(enum.StrEnum):
    """Why a run ended, as SPEC.md names it."""

    EXIT = "exit"
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    CANCELLED = "cancelled"
    INTERNAL_ERROR = "internal_error"


class Verdict(enum.StrEnum):
    """How a case's output compares with its expected output (cases.judge)."""

    ACCEPTED = "accepted"
    WRONG_ANSWER = "wrong_answer"


@dataclass(frozen=True, slots=True)
class Result:
    """The end of a run; stdout/stderr/compile_output equal the joined chunks given to on_output.

    A run with cases has one Result per case in `cases` (each with the joined chunks of that
    case, no compile_output, and a verdict when the case had an expected output and completed);
    its own stdout/stderr are theirs joined in order, and its status is that of its first case
    that did not complete (cases.summarize).

    `terminal_size` is a tty run's (cols, rows) when its program started: the Program's
    terminal_size, or 80x24, unless a Control.resize() came before the start (then the last
    one). None for a run without a terminal: no tty, or a program that never started
    (cancelled first, or a compile error).
    """

    status: ExecutionStatus
    reason: Reason
    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    compile_output: str
    stdout_truncated: bool
    stderr_truncated: bool
    wall_time_ms: int
    cpu_time_ms: int | None
    memory_kb: int | None
    message: str | None = None
    verdict: Verdict | None = None
    cases: tuple[Result, ...] = ()
    terminal_size: tuple[int, int] | None = None

    @classmethod
    def without_output(cls, status: ExecutionStatus, reason: Reason, message: str) -> Result:
        """A run that ended before its program produced anything (cancelled while waiting,
        or our own failure)."""
        return cls(
            status=status,
            reason=reason,
            exit_code=None,
            signal=None,
            stdout="",
            stderr="",
            compile_output="",
            stdout_truncated=False,
            stderr_truncated=False,
            wall_time_ms=0,
            cpu_time_ms=None,
            memory_kb=None,
            message=message,
        )
