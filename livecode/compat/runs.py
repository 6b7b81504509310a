"""What both foreign APIs need of a livecode run: a bounded request body, waiting for the run's
end, and its output as the program wrote it.

The program's output is rebuilt from the stored chunk index (one ``[stream, n_chars]`` per seq),
which gives stdout and stderr in the order they arrived (Piston's ``output``, Judge0's
``redirect_stderr_to_stdout``) and leaves out the notice livecode's own API appends to stderr
on a timeout: neither Judge0 nor Piston prints one.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from livecode.services import Services
from livecode.store import Execution
from livecode.tenants import Tenant
from runners import Reason

__all__ = [
    "ProgramOutput",
    "body_cap",
    "compile_failed",
    "is_timeout_notice",
    "program_output",
    "wait_final",
]

# JSON may spell one byte of text as six (\u0001), base64 as 4/3 of it; and some room besides.
_JSON_EXPANSION = 6
_OVERHEAD_BYTES = 64 << 10
# The stderr chunk the executor adds to a timed-out run (livecode/executor.py).
_TIMEOUT_NOTICE = re.compile(r"\n?Execution exceeded \S+ second timeout")


@dataclass(frozen=True, slots=True)
class ProgramOutput:
    """What the program wrote: each stream, and both in the order they arrived."""

    stdout: str
    stderr: str
    merged: str


def body_cap(services: Services, *, runs: int = 1) -> int:
    """The largest request body that can hold `runs` valid runs."""
    settings = services.settings
    per_run = (settings.max_source_bytes + settings.max_stdin_bytes) * _JSON_EXPANSION
    return runs * per_run + _OVERHEAD_BYTES


async def wait_final(
    services: Services, execution_id: str, timeout_s: float, *, tenant: Tenant
) -> Execution:
    """Follow an execution to its `finished` event and return it as stored; past `timeout_s`,
    return it as it is then (still QUEUED or RUNNING).

    Safe to cancel: the follow ends with the task.
    """
    assert services.relay is not None  # set by the lifespan before any request
    try:
        async with asyncio.timeout(timeout_s):
            async with services.relay.follow(execution_id) as events:
                async for event in events:
                    if event["type"] in ("finished", "error"):
                        break  # `error`: the follow ended early; the store tells what is known
    except TimeoutError:
        pass
    return await run_in_threadpool(_get, services, execution_id, tenant)


def compile_failed(execution: Execution) -> bool:
    """Whether the compiler, not the program, ended the execution (a compile error, or its
    time limit)."""
    if execution.reason == Reason.COMPILE_ERROR:
        return True
    # The runner's message is the one sign that the compiler, not the program, ran out of time.
    message = execution.error_message or ""
    return execution.reason == Reason.TIMEOUT and message.startswith("Compilation")


def is_timeout_notice(text: str) -> bool:
    """Whether an stderr chunk is the notice livecode adds to a timed-out run."""
    return _TIMEOUT_NOTICE.fullmatch(text) is not None


def program_output(execution: Execution) -> ProgramOutput:
    """The program's stdout and stderr, apart and merged, without livecode's timeout notice."""
    pieces = _pieces(execution)
    if pieces is None:  # no chunk index (a run that never started): the stored texts
        stdout, stderr = execution.stdout or "", execution.stderr or ""
        return ProgramOutput(stdout, stderr, stdout + stderr)
    if (
        execution.reason == Reason.TIMEOUT
        and pieces
        and pieces[-1][0] == "stderr"
        and is_timeout_notice(pieces[-1][1])
    ):
        pieces.pop()
    stdout = "".join(text for stream, text in pieces if stream == "stdout")
    stderr = "".join(text for stream, text in pieces if stream == "stderr")
    merged = "".join(text for stream, text in pieces if stream != "compile")
    return ProgramOutput(stdout, stderr, merged)


def _pieces(execution: Execution) -> list[tuple[str, str]] | None:
    """(stream, text) of each output event, in seq order, cut from the stored texts."""
    if execution.chunks is None:
        return None
    texts = {
        "stdout": execution.stdout or "",
        "stderr": execution.stderr or "",
        "compile": execution.compile_output or "",
    }
    offsets = dict.fromkeys(texts, 0)
    pieces = []
    for stream, length, *_case in execution.chunks:  # a test case's index: none here
        start = offsets[stream]
        offsets[stream] = start + length
        pieces.append((stream, texts[stream][start : start + length]))
    return pieces


def _get(services: Services, execution_id: str, tenant: Tenant) -> Execution:
    return services.commands.get_execution(execution_id, tenant=tenant)
