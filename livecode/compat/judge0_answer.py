"""A livecode execution answered as a Judge0 CE 1.13.1 submission (reference/compat.md, 5).

livecode's final states map onto Judge0's status ids::

    QUEUED / RUNNING                   1 In Queue / 2 Processing
    COMPLETED                          3 Accepted, or 4 Wrong Answer when expected_output differs
    compile_error, compile timeout     6 Compilation Error (compile_output; run fields null)
    runtime_error, exit N              11 Runtime Error (NZEC), "Exited with error status N"
    runtime_error, signal 11/25/8/6/…  7/8/9/10/12, exit_signal N, "Caught fatal signal N"
    timeout                            5 Time Limit Exceeded, "Time limit exceeded"
    memory_limit                       12 Runtime Error (Other)
    output_limit                       8 Runtime Error (SIGXFSZ): Judge0's file-size limit
    cancelled, internal_error          13 Internal Error, with livecode's message

As Judge0 writes them: empty outputs are null, ``time`` and ``wall_time`` are seconds as decimal
strings (``"0.012"``), ``memory`` KB, timestamps ``2024-04-03T05:40:51.306Z``; with
``base64_encoded=true`` the texts and ``message`` are Ruby's ``encode64`` (a newline every 60
characters). ``fields=*`` answers Judge0's 35 attributes and not one more: the official SDK
refuses any other key.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import shlex
from typing import Any

from livecode.compat.judge0_languages import Catalog
from livecode.compat.judge0_request import config_info
from livecode.compat.runs import compile_failed, program_output
from livecode.config import Settings
from livecode.store import Execution
from runners import ExecutionStatus, Reason

__all__ = ["ALL_FIELDS", "DEFAULT_FIELDS", "STATUSES", "FieldsInvalid", "requested_fields"]

STATUSES = {
    1: "In Queue",
    2: "Processing",
    3: "Accepted",
    4: "Wrong Answer",
    5: "Time Limit Exceeded",
    6: "Compilation Error",
    7: "Runtime Error (SIGSEGV)",
    8: "Runtime Error (SIGXFSZ)",
    9: "Runtime Error (SIGFPE)",
    10: "Runtime Error (SIGABRT)",
    11: "Runtime Error (NZEC)",
    12: "Runtime Error (Other)",
    13: "Internal Error",
    14: "Exec Format Error",
}
# Judge0's columns less id, then status and language, in its serializer's order.
ALL_FIELDS = (
    "source_code language_id stdin expected_output stdout status_id created_at finished_at time "
    "memory stderr token number_of_runs cpu_time_limit cpu_extra_time wall_time_limit "
    "memory_limit stack_limit max_processes_and_or_threads "
    "enable_per_process_and_thread_time_limit enable_per_process_and_thread_memory_limit "
    "max_file_size compile_output exit_code exit_signal message wall_time compiler_options "
    "command_line_arguments redirect_stderr_to_stdout callback_url additional_files "
    "enable_network status language"
).split()
DEFAULT_FIELDS = tuple("token time memory stdout stderr compile_output message status".split())
_ENCODED = frozenset(
    "source_code stdin expected_output stdout stderr compile_output message".split()
)
_SIGNAL_STATUS = {11: 7, 25: 8, 8: 9, 6: 10}
_SIGXFSZ = 25


class FieldsInvalid(Exception):
    """`fields=` named attributes Judge0 does not have (400)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(names)
        self.names = names


def requested_fields(raw: str | None) -> tuple[str, ...]:
    """The attributes `fields=a,b` asks for (`*`: all), in the serializer's order."""
    names = [name for name in (raw or "").split(",") if name]
    invalid = [name for name in names if name != "*" and name not in ALL_FIELDS]
    if invalid:
        raise FieldsInvalid(invalid)
    if "*" in names:
        return tuple(ALL_FIELDS)
    return tuple(name for name in ALL_FIELDS if name in names) or _in_order(DEFAULT_FIELDS)


def submission_json(
    execution: Execution,
    fields: tuple[str, ...],
    *,
    base64_encoded: bool,
    settings: Settings,
    catalog: Catalog,
) -> dict[str, Any]:
    """The execution as Judge0 answers a submission, with the requested attributes only."""
    # A field a submission did not keep (or an execution made through livecode's own API)
    # answers as that execution really ran.
    request = {**_native_request(execution, settings), **(execution.judge0 or {})}
    attributes: dict[str, Any] = {
        "source_code": execution.source_code,
        "stdin": execution.stdin.decode("utf-8", "replace")
        if execution.stdin is not None
        else None,
        "created_at": _timestamp(execution.created_at),
        "finished_at": _timestamp(execution.finished_at),
        "token": execution.id,
        "additional_files": None,
        **request,
        **_outcome(execution, request),
    }
    for name in ("cpu_time_limit", "cpu_extra_time", "wall_time_limit"):
        attributes[name] = _decimal(attributes[name])
    attributes["status"] = {
        "id": attributes["status_id"],
        "description": STATUSES[attributes["status_id"]],
    }
    language = catalog.get(attributes["language_id"])
    attributes["language"] = {
        "id": attributes["language_id"],
        "name": language.name if language is not None else execution.language,
    }
    answer = {name: attributes[name] for name in fields}
    if base64_encoded:
        for name in _ENCODED.intersection(answer):
            answer[name] = _encode64(answer[name])
    return answer


def _outcome(execution: Execution, request: dict[str, Any]) -> dict[str, Any]:
    """status_id and what the run produced, as Judge0 would have recorded it."""
    outcome: dict[str, Any] = dict.fromkeys(
        "stdout stderr compile_output time wall_time memory exit_code exit_signal message".split()
    )
    if not execution.is_final:
        running = execution.status == ExecutionStatus.RUNNING
        return {**outcome, "status_id": 2 if running else 1}
    reason = execution.reason
    compile_output = execution.compile_output or None
    if compile_failed(execution):
        if reason == Reason.TIMEOUT:
            compile_output = "Compilation time limit exceeded."
        return {**outcome, "status_id": 6, "compile_output": compile_output}
    if reason in (Reason.CANCELLED, Reason.INTERNAL_ERROR) or reason is None:
        message = execution.error_message or str(reason)
        return {**outcome, "status_id": 13, "compile_output": compile_output, "message": message}
    output = program_output(execution)
    stdout, stderr = output.stdout, output.stderr
    if request.get("redirect_stderr_to_stdout"):
        stdout, stderr = output.merged, ""
    outcome.update(
        stdout=stdout or None,
        stderr=stderr or None,
        compile_output=compile_output,
        time=_seconds(execution.cpu_time_ms),
        wall_time=_seconds(execution.execution_time_ms),
        memory=execution.memory_kb,
        exit_code=0,
    )
    signal = execution.signal
    if reason == Reason.EXIT:
        expected = request.get("expected_output")
        accepted = expected is None or _strip(expected) == _strip(outcome["stdout"])
        outcome["status_id"] = 3 if accepted else 4
    elif reason == Reason.TIMEOUT:
        outcome.update(status_id=5, message="Time limit exceeded")
    elif reason == Reason.OUTPUT_LIMIT:
        outcome.update(status_id=8, exit_signal=_SIGXFSZ, message=f"Caught fatal signal {_SIGXFSZ}")
    elif signal is not None:
        status_id = 12 if reason == Reason.MEMORY_LIMIT else _SIGNAL_STATUS.get(signal, 12)
        outcome.update(
            status_id=status_id, exit_signal=signal, message=f"Caught fatal signal {signal}"
        )
    else:
        code = execution.exit_code
        status_id = 12 if reason == Reason.MEMORY_LIMIT else 11
        outcome.update(
            status_id=status_id, exit_code=code, message=f"Exited with error status {code}"
        )
    return outcome


def _native_request(execution: Execution, settings: Settings) -> dict[str, Any]:
    """The Judge0 fields of an execution made through livecode's own API: its real limits."""
    config = config_info(settings)
    limits = execution.limits
    return {
        "language_id": Catalog.default_id(execution.language),
        "expected_output": None,
        "number_of_runs": 1,
        "cpu_time_limit": limits.get("wall_timeout_s", config["cpu_time_limit"]),
        "cpu_extra_time": 0.0,
        "wall_time_limit": limits.get("wall_timeout_s", config["wall_time_limit"]),
        "memory_limit": limits.get("memory_mb", settings.memory_mb) * 1024,
        "stack_limit": limits.get("memory_mb", settings.memory_mb) * 1024,
        "max_processes_and_or_threads": limits.get("max_processes", settings.max_processes),
        "enable_per_process_and_thread_time_limit": False,
        "enable_per_process_and_thread_memory_limit": False,
        "max_file_size": limits.get("output_limit_bytes", settings.output_limit_bytes) // 1024,
        "compiler_options": None,
        "command_line_arguments": shlex.join(execution.args) if execution.args else None,
        "redirect_stderr_to_stdout": False,
        "callback_url": None,
        "enable_network": False,
    }


def _strip(text: str | None) -> str | None:
    """Judge0's comparison form: trailing whitespace off each line and off the end (Ruby's
    rstrip, which also strips NUL)."""
    if text is None:
        return None
    whitespace = " \t\n\v\f\r\x00"
    return "\n".join(line.rstrip(whitespace) for line in text.split("\n")).rstrip(whitespace)


def _seconds(milliseconds: int | None) -> str | None:
    return None if milliseconds is None else _decimal(milliseconds / 1000)


def _decimal(value: float | None) -> str | None:
    """A Rails decimal column in JSON: a string, at least one fractional digit ("5.0")."""
    if value is None:
        return None
    text = format(decimal.Decimal(repr(float(value))), "f")
    if "." not in text:
        return text + ".0"
    text = text.rstrip("0")
    return text + "0" if text.endswith(".") else text


def _timestamp(moment: dt.datetime | None) -> str | None:
    """Rails' JSON time: UTC, milliseconds, Z."""
    if moment is None:
        return None
    moment = moment.astimezone(dt.UTC) if moment.tzinfo else moment
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _encode64(text: str | None) -> str | None:
    """Ruby's Base64.encode64: a newline after every 60 characters and at the end."""
    if text is None:
        return None
    encoded = base64.b64encode(text.encode()).decode()
    return "".join(encoded[i : i + 60] + "\n" for i in range(0, len(encoded), 60))


def _in_order(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in ALL_FIELDS if name in names)
