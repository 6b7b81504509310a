"""A Judge0 submission request, validated as Judge0 CE 1.13.1 validates it, turned into a run.

Judge0's model (``app/models/submission.rb``) fills each limit left out with its configured
default, then checks every field and answers all problems at once, Rails style:
``{"wall_time_limit": ["must be less than or equal to 30.0"], ...}`` (422). Here the configured
defaults and maxima are livecode's own (:func:`config_info`), so a limit above livecode's
answers in Judge0's words. What livecode refuses on purpose answers with Judge0's own "not
allowed" texts: callbacks (the server would call user URLs), additional files (one file per
run), the network (the sandbox has none), compiler options and per-process limits.

Limits become livecode's: ``wall_time_limit`` and ``cpu_time_limit + cpu_extra_time`` the run's
timeout (the smaller), ``memory_limit`` KB its memory, ``max_processes_and_or_threads`` its
processes, ``max_file_size`` KB its output limit per stream (Judge0's stdout is a file, so this
is what that limit meant there). ``stack_limit`` is accepted up to the memory limit, which is
what bounds a stack here. ``command_line_arguments`` is split into words as Judge0's bash run
script splits it, after dropping the characters Judge0 drops.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from livecode.compat.judge0_languages import Catalog, Judge0Language
from livecode.config import Settings
from livecode.protocol import RequestedLimits, RunOptions

__all__ = [
    "MAX_BATCH_SIZE",
    "SubmissionInvalid",
    "SubmissionRequest",
    "config_info",
    "parse_submission",
]

MAX_BATCH_SIZE = 20
_MAX_OPTION_CHARS = 512
_MAX_ARGS = 64  # livecode's own cap (protocol.RunOptions)
# Judge0 removes these from compiler options and arguments before bash reads them.
_SHELL_CHARS = re.compile(r"[$&;<>|`]")
_PERMITTED = (
    "source_code language_id compiler_options command_line_arguments number_of_runs stdin "
    "expected_output cpu_time_limit cpu_extra_time wall_time_limit memory_limit stack_limit "
    "max_processes_and_or_threads enable_per_process_and_thread_time_limit "
    "enable_per_process_and_thread_memory_limit max_file_size redirect_stderr_to_stdout "
    "callback_url additional_files enable_network"
).split()
_TEXTS = (
    "source_code stdin expected_output compiler_options command_line_arguments callback_url"
).split()
_FALSE_VALUES = (False, 0, "0", "f", "F", "false", "FALSE", "off", "OFF")  # Rails' Boolean


class SubmissionInvalid(Exception):
    """A submission Judge0 would refuse: its errors, field -> messages (422)."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass(frozen=True, slots=True)
class SubmissionRequest:
    """A valid submission: the run it asks for, and the Judge0 fields livecode keeps for it."""

    language: Judge0Language
    source_code: str
    options: RunOptions
    fields: dict[str, Any]  # stored in the execution's judge0 column, answered by fields=*


def config_info(settings: Settings) -> dict[str, Any]:
    """GET /config_info: the 39 keys of Judge0's Config.config_info, with livecode's limits."""
    wall_s = float(settings.wall_timeout_s)
    memory_kb = settings.memory_mb * 1024
    output_kb = max(1, settings.output_limit_bytes // 1024)
    return {
        "maintenance_mode": False,
        "enable_wait_result": True,
        "enable_compiler_options": False,
        "allowed_languages_for_compile_options": [],
        "enable_command_line_arguments": True,
        "enable_submission_delete": False,
        "enable_callbacks": False,
        "callbacks_max_tries": 0,
        "callbacks_timeout": 0.0,
        "enable_additional_files": False,
        "max_queue_size": settings.queue_cap,
        "cpu_time_limit": wall_s,
        "max_cpu_time_limit": wall_s,
        "cpu_extra_time": 0.0,
        "max_cpu_extra_time": wall_s,
        "wall_time_limit": wall_s,
        "max_wall_time_limit": wall_s,
        "memory_limit": memory_kb,
        "max_memory_limit": memory_kb,
        "stack_limit": memory_kb,
        "max_stack_limit": memory_kb,
        "max_processes_and_or_threads": settings.max_processes,
        "max_max_processes_and_or_threads": settings.max_processes,
        "enable_per_process_and_thread_time_limit": False,
        "allow_enable_per_process_and_thread_time_limit": False,
        "enable_per_process_and_thread_memory_limit": False,
        "allow_enable_per_process_and_thread_memory_limit": False,
        "max_file_size": output_kb,
        "max_max_file_size": output_kb,
        "number_of_runs": 1,
        "max_number_of_runs": 1,
        "redirect_stderr_to_stdout": False,
        "max_extract_size": 0,
        "enable_batched_submissions": True,
        "max_submission_batch_size": MAX_BATCH_SIZE,
        "submission_cache_duration": 0.0,
        "use_docs_as_homepage": False,
        "allow_enable_network": False,
        "enable_network": False,
    }


def parse_submission(
    params: Mapping[str, Any],
    *,
    base64_encoded: bool,
    settings: Settings,
    catalog: Catalog,
) -> SubmissionRequest:
    """Validate one submission's parameters; raises SubmissionInvalid with Judge0's errors."""
    config = config_info(settings)
    raw = {name: _scalar(params.get(name)) for name in _PERMITTED}
    if base64_encoded:
        for name in ("source_code", "stdin", "expected_output"):
            if raw[name] is not None:
                raw[name] = _decode64(str(raw[name]))
    errors: dict[str, list[str]] = {}

    def add(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    for name in _TEXTS:  # what JSON may carry and no program text can: lone surrogates
        if isinstance(raw[name], str) and not _is_unicode(raw[name]):
            add(name, "must be valid Unicode text (no lone surrogates)")
            raw[name] = None
    if isinstance(raw["expected_output"], str) and "\x00" in raw["expected_output"]:
        add("expected_output", "must not contain NUL characters")
    source_code = _text(raw["source_code"])
    if source_code is None or not source_code.strip():
        add("source_code", "can't be blank")
    elif len(source_code.encode()) > settings.max_source_bytes:
        add("source_code", f"is too long (maximum is {settings.max_source_bytes} bytes)")
    elif "\x00" in source_code:
        add("source_code", "must not contain NUL characters")
    if raw["language_id"] is None or raw["language_id"] == "":
        add("language_id", "can't be blank")
    fields: dict[str, Any] = {}
    for name, default, low, high, strictly_above_low in (
        ("number_of_runs", config["number_of_runs"], 0, config["max_number_of_runs"], True),
        ("cpu_time_limit", config["cpu_time_limit"], 0, config["max_cpu_time_limit"], False),
        ("cpu_extra_time", config["cpu_extra_time"], 0, config["max_cpu_extra_time"], False),
        ("wall_time_limit", config["wall_time_limit"], 1, config["max_wall_time_limit"], False),
        ("memory_limit", config["memory_limit"], 2048, config["max_memory_limit"], False),
        ("stack_limit", config["stack_limit"], 0, config["max_stack_limit"], False),
        (
            "max_processes_and_or_threads",
            config["max_processes_and_or_threads"],
            0,
            config["max_max_processes_and_or_threads"],
            True,
        ),
    ):
        fields[name] = _number(raw[name], default, low, high, strictly_above_low, name, add)
    for name in (
        "enable_per_process_and_thread_time_limit",
        "enable_per_process_and_thread_memory_limit",
    ):
        fields[name] = _boolean(raw[name]) or False
        if fields[name]:
            add(name, "this option cannot be enabled")
    limit = config["max_max_file_size"]
    fields["max_file_size"] = _number(
        raw["max_file_size"], config["max_file_size"], 0, limit, False, "max_file_size", add
    )
    for name in ("compiler_options", "command_line_arguments"):
        fields[name] = _text(raw[name])
        if fields[name] is not None and len(fields[name]) > _MAX_OPTION_CHARS:
            add(name, f"is too long (maximum is {_MAX_OPTION_CHARS} characters)")
    language = _language(raw["language_id"], catalog)
    if language is None:
        add("language_id", f"language with id {_show(raw['language_id'])} doesn't exist")
    if _present(fields["compiler_options"]):
        add("compiler_options", "setting compiler options is not allowed")
    fields["callback_url"] = _text(raw["callback_url"])
    if _present(fields["callback_url"]):
        add("callback_url", "setting callback is not allowed")
    if _present(_text(raw["additional_files"])):
        add("additional_files", "setting additional files is not allowed")
    fields["enable_network"] = _boolean(raw["enable_network"]) or False
    if fields["enable_network"]:
        add("enable_network", "enabling network is not allowed")
    fields["redirect_stderr_to_stdout"] = _boolean(raw["redirect_stderr_to_stdout"]) or False
    stdin = _text(raw["stdin"])
    if stdin is not None and len(stdin.encode()) > settings.max_stdin_bytes:
        add("stdin", f"is too long (maximum is {settings.max_stdin_bytes} bytes)")
    args = _split_arguments(fields["command_line_arguments"], add)
    if errors:
        raise SubmissionInvalid(errors)
    assert language is not None and source_code is not None
    fields = {
        "language_id": language.id,
        "expected_output": _text(raw["expected_output"]),
        **fields,
    }
    options = RunOptions(stdin=stdin, args=list(args), limits=_limits(fields, config))
    return SubmissionRequest(language, source_code, options, fields)


def _limits(fields: Mapping[str, Any], config: Mapping[str, Any]) -> RequestedLimits | None:
    """livecode's limits for Judge0's, each only when the request lowers it."""
    limits: dict[str, Any] = {}
    timeouts = [fields["wall_time_limit"]]
    if fields["cpu_time_limit"] > 0:  # 0: no CPU time limit
        timeouts.append(fields["cpu_time_limit"] + fields["cpu_extra_time"])
    if min(timeouts) < config["max_wall_time_limit"]:
        limits["timeout_s"] = min(timeouts)
    if fields["memory_limit"] < config["max_memory_limit"]:
        limits["memory_mb"] = max(1, math.ceil(fields["memory_limit"] / 1024))
    if fields["max_processes_and_or_threads"] < config["max_max_processes_and_or_threads"]:
        limits["max_processes"] = fields["max_processes_and_or_threads"]
    if fields["max_file_size"] < config["max_max_file_size"]:
        limits["output_limit_bytes"] = max(1, fields["max_file_size"] * 1024)
    return RequestedLimits(**limits) if limits else None


def _number(
    value: Any,
    default: int | float,
    low: int,
    high: int | float,
    strictly_above_low: bool,
    name: str,
    add: Any,
) -> Any:
    """A numeric field (Rails numericality), or the default when left out."""
    if value is None or value == "":
        return default
    number: float
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
    except ValueError:
        add(name, "is not a number")
        return default
    if strictly_above_low and number <= low:
        add(name, f"must be greater than {low}")
    elif not strictly_above_low and number < low:
        add(name, f"must be greater than or equal to {low}")
    elif number > high:
        add(name, f"must be less than or equal to {high}")
    return int(number) if isinstance(default, int) else number


def _language(value: Any, catalog: Catalog) -> Judge0Language | None:
    try:
        language_id = int(float(value)) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
    return catalog.get(language_id) if language_id is not None else None


def _split_arguments(text: str | None, add: Any) -> list[str]:
    if text is None or not text.strip():
        return []
    try:
        words = shlex.split(_SHELL_CHARS.sub("", text.strip()))
    except ValueError as exc:
        add("command_line_arguments", f"cannot be split into arguments: {exc}")
        return []
    if len(words) > _MAX_ARGS:
        add("command_line_arguments", f"has too many arguments (maximum is {_MAX_ARGS})")
    if any("\x00" in word for word in words):
        add("command_line_arguments", "must not contain NUL characters")
    return words


def _scalar(value: Any) -> Any:
    # Rails' params.permit keeps scalars only: an array or object is as if left out.
    return None if isinstance(value, list | dict) else value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _boolean(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    return value not in _FALSE_VALUES


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _present(value: str | None) -> bool:
    return value is not None and bool(value.strip())


def _show(value: Any) -> str:
    return "" if value is None else str(value)


def _decode64(text: str) -> str:
    """Ruby's lenient Base64.decode64: characters outside the alphabet are skipped, and
    missing padding is no error. Bytes that are not UTF-8 become U+FFFD."""
    alphabet = re.sub(r"[^A-Za-z0-9+/]", "", text.split("=", 1)[0])
    if len(alphabet) % 4 == 1:
        alphabet = alphabet[:-1]  # six bits alone make no byte
    try:
        data = base64.b64decode(alphabet + "=" * (-len(alphabet) % 4))
    except binascii.Error:
        data = b""
    return data.decode("utf-8", errors="replace")
