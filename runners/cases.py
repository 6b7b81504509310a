"""Test cases: the verdict of one case, the Result of a run from the Results of its cases, and
their output passed on in case order.

The runner compiles once and runs each case in a fresh sandbox (runner.py), side by side when
it can borrow slots; this is what it makes of them. A case's verdict is Judge0's: its stdout
and its expected output are equal once trailing whitespace is stripped from every line and from
the end.
"""

from __future__ import annotations

import collections
import dataclasses
import threading

from runners.pump import OnOutput
from runners.result import ExecutionStatus, Reason, Result, Stream, Verdict

# Ruby's String#rstrip, which Judge0 applies (ASCII whitespace and NUL, not Unicode's)
_TRAILING = " \t\n\v\f\r\x00"


def judge(expected_output: str, stdout: str) -> Verdict:
    """ACCEPTED when the outputs match as Judge0 compares them, else WRONG_ANSWER."""
    return Verdict.ACCEPTED if _strip(expected_output) == _strip(stdout) else Verdict.WRONG_ANSWER


def with_verdict(result: Result, expected_output: str | None) -> Result:
    """The case's Result with its verdict: only for a case that completed and expected output."""
    if expected_output is None or result.status is not ExecutionStatus.COMPLETED:
        return result
    return dataclasses.replace(result, verdict=judge(expected_output, result.stdout))


def not_run(count: int, ended: Result) -> tuple[Result, ...]:
    """Results for `count` cases that never ran because the run ended first (a failed compile,
    a cancel): each says so with the run's status, reason and message, and has no output."""
    return tuple(
        Result.without_output(ended.status, ended.reason, ended.message or "") for _ in range(count)
    )


def summarize(cases: tuple[Result, ...], compile_output: str) -> Result:
    """The run's Result from its cases' (all of them, in order).

    Its status, reason, exit code, signal and message are those of the first case that did not
    complete, else COMPLETED; its stdout and stderr are the cases' joined in order; its wall
    and CPU times their sums, its memory their maximum.
    """
    failed = next((case for case in cases if case.status is not ExecutionStatus.COMPLETED), None)
    cpu_times = [case.cpu_time_ms for case in cases if case.cpu_time_ms is not None]
    memories = [case.memory_kb for case in cases if case.memory_kb is not None]
    return Result(
        status=failed.status if failed else ExecutionStatus.COMPLETED,
        reason=failed.reason if failed else Reason.EXIT,
        exit_code=failed.exit_code if failed else 0,
        signal=failed.signal if failed else None,
        stdout="".join(case.stdout for case in cases),
        stderr="".join(case.stderr for case in cases),
        compile_output=compile_output,
        stdout_truncated=any(case.stdout_truncated for case in cases),
        stderr_truncated=any(case.stderr_truncated for case in cases),
        wall_time_ms=sum(case.wall_time_ms for case in cases),
        cpu_time_ms=sum(cpu_times) if cpu_times else None,
        memory_kb=max(memories) if memories else None,
        message=failed.message if failed else None,
        cases=cases,
    )


class InOrder:
    """Passes a run's test cases' output on in case order, one call at a time: the first
    unfinished case's as it comes, a later case's held until the cases before it have ended."""

    def __init__(self, count: int) -> None:
        self._lock = threading.Lock()
        self._ended = [False] * count
        self._current = 0  # the first case that has not ended
        self._held: dict[int, list[tuple[Stream, str]]] = collections.defaultdict(list)
        self._outputs: dict[int, OnOutput] = {}

    def output(self, index: int, on_output: OnOutput | None) -> OnOutput | None:
        """Where case `index` hands its output: on to `on_output`, in its turn."""
        if on_output is None:
            return None
        self._outputs[index] = on_output

        def emit(stream: Stream, text: str) -> None:
            with self._lock:
                if index == self._current:
                    on_output(stream, text)
                else:
                    self._held[index].append((stream, text))

        return emit

    def end(self, index: int) -> None:
        """Case `index` has ended: the next cases' held output goes on, up to the first that
        has not ended."""
        with self._lock:
            self._ended[index] = True
            while self._current < len(self._ended) and self._ended[self._current]:
                self._current += 1
                for stream, text in self._held.pop(self._current, ()):
                    self._outputs[self._current](stream, text)


def _strip(text: str) -> str:
    return "\n".join(line.rstrip(_TRAILING) for line in text.split("\n")).rstrip(_TRAILING)
