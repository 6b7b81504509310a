"""A Piston v2 job: its runtimes, its request checked as Piston checks it, and its stages.

Runtimes are livecode's languages under Piston's names and aliases (``packages/*/metadata.json``)
with the versions livecode really runs: ``python``, ``javascript`` (runtime ``node``), ``c++``
(runtime ``gcc``). A request's ``version`` is a semver range (:mod:`livecode.compat.semver`).

Limits are Piston's, in its units: ``run_timeout`` / ``run_cpu_time`` ms become the run's
timeout (the smaller), ``run_memory_limit`` bytes its memory; the compile ones are checked
against livecode's compile limits, which a request cannot lower. A limit of 0 or less means
livecode's own (piston-client sends -1 for "none"); one above it answers Piston's own
"cannot exceed the configured limit". livecode runs one file: ``files`` holds exactly one, as
text.

A stage, as Piston's ``job.js`` reports it: ``code`` (null when killed), ``signal`` (a name),
``status`` (``RE`` exit code, ``SG`` signal, ``TO`` timeout, ``OL`` / ``EL`` output over the
limit), ``message``, ``memory`` bytes, ``cpu_time`` / ``wall_time`` ms, and ``output``: stdout
and stderr in the order they arrived.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from livecode.compat.runs import compile_failed, program_output
from livecode.compat.semver import parse_version, satisfies
from livecode.config import Settings
from livecode.protocol import RequestedLimits, RunOptions
from livecode.store import Execution
from runners import Language, Limits, Reason

__all__ = [
    "SIGNALS",
    "Job",
    "JobInvalid",
    "Runtime",
    "parse_job",
    "result_json",
    "runtimes_of",
    "signal_name",
    "stage_ending",
]

# Piston's api/src/globals.js
SIGNALS = {
    number: name
    for number, name in enumerate(
        "SIGHUP SIGINT SIGQUIT SIGILL SIGTRAP SIGABRT SIGBUS SIGFPE SIGKILL SIGUSR1 SIGSEGV "
        "SIGUSR2 SIGPIPE SIGALRM SIGTERM SIGSTKFLT SIGCHLD SIGCONT SIGSTOP SIGTSTP SIGTTIN "
        "SIGTTOU SIGURG SIGXCPU SIGXFSZ SIGVTALRM SIGPROF SIGWINCH SIGIO SIGPWR SIGSYS".split(),
        start=1,
    )
}
SIGNALS |= {34: "SIGRTMIN", 64: "SIGRTMAX"}
SIGNALS |= {34 + n: f"SIGRTMIN+{n}" for n in range(1, 16)}
SIGNALS |= {64 - n: f"SIGRTMAX-{n}" for n in range(1, 15)}

# Piston's names and aliases of livecode's languages: (language, runtime package, aliases)
_PISTON_NAMES = {
    "python": ("python", None, ("py", "py3", "python3", "python{major}.{minor}")),
    "javascript": ("javascript", "node", ("node-javascript", "node-js", "javascript", "js")),
    "c++": ("c++", "gcc", ("cpp", "g++")),
}
_MiB = 1 << 20


class JobInvalid(Exception):
    """A request Piston would refuse: its message (400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Runtime:
    """One of livecode's languages as Piston lists it."""

    language: str
    version: str
    aliases: tuple[str, ...]
    runtime: str | None
    livecode: Language

    def as_json(self) -> dict[str, Any]:
        """An entry of GET /api/v2/runtimes (`runtime` only for a multi-language package)."""
        entry: dict[str, Any] = {
            "language": self.language,
            "version": self.version,
            "aliases": list(self.aliases),
        }
        if self.runtime is not None:
            entry["runtime"] = self.runtime
        return entry


@dataclass(frozen=True, slots=True)
class Job:
    """A valid request: the runtime and the run it asks for."""

    runtime: Runtime
    source_code: str
    options: RunOptions


@functools.cache
def runtimes_of(languages: tuple[Language, ...]) -> tuple[Runtime, ...]:
    """The runtimes of the languages available here (cached: languages are detected once)."""
    runtimes = []
    for language in languages:
        if not language.available or language.id not in _PISTON_NAMES:
            continue
        version = parse_version(language.version or "") or (0, 0, 0)
        name, package, aliases = _PISTON_NAMES[language.id]
        major, minor, _ = version
        aliases = tuple(alias.format(major=major, minor=minor) for alias in aliases)
        runtimes.append(Runtime(name, "{}.{}.{}".format(*version), aliases, package, language))
    return tuple(runtimes)


def parse_job(
    body: Any, *, settings: Settings, runtimes: tuple[Runtime, ...], interactive: bool = False
) -> Job:
    """Check a request as Piston's ``get_job`` does; raises JobInvalid with its message."""
    body = body if isinstance(body, dict) else {}
    language, version, files = body.get("language"), body.get("version"), body.get("files")
    if not language or not isinstance(language, str):
        raise JobInvalid("language is required as a string")
    if not version or not isinstance(version, str):
        raise JobInvalid("version is required as a string")
    if not isinstance(files, list):
        raise JobInvalid("files is required as an array")
    for i, file in enumerate(files):
        if not isinstance(file, dict) or not isinstance(file.get("content"), str):
            raise JobInvalid(f"files[{i}].content is required as a string")
    runtime = _runtime(runtimes, language, version)
    if runtime is None:
        raise JobInvalid(f"{language}-{version} runtime is unknown")
    texts = [file for file in files if file.get("encoding") in (None, "", "utf8")]
    if not texts:
        raise JobInvalid("files must include at least one utf8 encoded file")
    if len(files) != 1:
        raise JobInvalid("livecode runs one file: files must hold exactly one, utf8 encoded")
    source_code = texts[0]["content"]
    if "\x00" in source_code or not _is_unicode(source_code):
        raise JobInvalid("files[0].content must be Unicode text without NUL characters")
    limits = _limits(body, settings)
    args = body.get("args")
    args = [] if args is None else args
    if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
        raise JobInvalid("args must be an array of strings")
    stdin = body.get("stdin")
    stdin = "" if stdin is None or interactive else stdin
    if not isinstance(stdin, str):
        raise JobInvalid("stdin must be a string")
    if not interactive and not stdin.endswith("\n"):
        stdin += "\n"  # Piston adds a trailing newline when there is none
    try:
        options = RunOptions(
            stdin=None if interactive else stdin,
            args=[str(arg) for arg in args],
            limits=limits,
            interactive=interactive,
        )
    except ValidationError as exc:  # livecode's own bounds (args, text)
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise JobInvalid(f"{where}: {error['msg'].removeprefix('Value error, ')}") from None
    return Job(runtime, source_code, options)


def result_json(execution: Execution, runtime: Runtime) -> dict[str, Any]:
    """POST /api/v2/execute's answer: {compile?, run, language, version}."""
    answer: dict[str, Any] = {}
    if runtime.livecode.is_compiled:
        compile_stage = _compile_stage(execution)
        answer["compile"] = compile_stage
        if compile_stage["code"] != 0:
            # Piston: a failed compile skips the run, and `run` is the compile stage.
            return {**answer, "run": compile_stage, **_identity(runtime)}
    answer["run"] = _run_stage(execution)
    return {**answer, **_identity(runtime)}


def signal_name(number: int | None) -> str | None:
    return None if number is None else SIGNALS.get(number, f"SIG{number}")


def _run_stage(execution: Execution) -> dict[str, Any]:
    output = program_output(execution)
    code, signal, status, message = stage_ending(execution)
    memory = execution.memory_kb * 1024 if execution.memory_kb is not None else None
    return _stage(
        stdout=output.stdout,
        stderr=output.stderr,
        output=output.merged,
        code=code,
        signal=signal,
        message=message,
        status=status,
        memory=memory,
        cpu_time=execution.cpu_time_ms,
        wall_time=execution.execution_time_ms,
    )


def _compile_stage(execution: Execution) -> dict[str, Any]:
    text = execution.compile_output or ""
    code: int | None = 0
    signal = status = message = None
    if execution.reason == Reason.TIMEOUT and compile_failed(execution):
        code, signal, status, message = None, "SIGKILL", "TO", "Time limit exceeded"
    elif compile_failed(execution):
        code = execution.exit_code if execution.exit_code is not None else 1
        status, message = "RE", f"Exited with error status {code}"
    return _stage(
        stdout="",
        stderr=text,
        output=text,
        code=code,
        signal=signal,
        message=message,
        status=status,
        memory=None,
        cpu_time=None,
        wall_time=None,
    )


def stage_ending(execution: Execution) -> tuple[int | None, str | None, str | None, str | None]:
    """(code, signal, status, message) of a run stage, as Piston's isolate metadata gives them."""
    reason, signal = execution.reason, execution.signal
    if reason == Reason.EXIT:
        return 0, None, None, None
    if reason == Reason.TIMEOUT:
        return None, "SIGKILL", "TO", "Time limit exceeded"
    if reason == Reason.OUTPUT_LIMIT:
        stream = "stdout" if execution.stdout_truncated else "stderr"
        status = "OL" if stream == "stdout" else "EL"
        return None, "SIGKILL", status, f"{stream} length exceeded"
    if reason == Reason.MEMORY_LIMIT:
        return None, "SIGKILL", "SG", f"Caught fatal signal {signal or 9}"
    if signal is not None:
        return None, signal_name(signal), "SG", f"Caught fatal signal {signal}"
    code = execution.exit_code
    return code, None, "RE", f"Exited with error status {code}"


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _stage(**fields: Any) -> dict[str, Any]:
    order = "signal stdout stderr code output memory message status cpu_time wall_time".split()
    return {name: fields[name] for name in order}


def _identity(runtime: Runtime) -> dict[str, str]:
    return {"language": runtime.language, "version": runtime.version}


def _runtime(runtimes: tuple[Runtime, ...], language: str, version: str) -> Runtime | None:
    matching = [
        runtime
        for runtime in runtimes
        if (runtime.language == language or language in runtime.aliases)
        and satisfies(runtime.version, version)
    ]
    matching.sort(key=lambda runtime: parse_version(runtime.version) or (0, 0, 0), reverse=True)
    return matching[0] if matching else None


def _configured(settings: Settings) -> dict[str, int]:
    """livecode's limits in Piston's names and units (ms, bytes)."""
    run_ms, compile_ms = int(settings.wall_timeout_s * 1000), int(settings.compile_timeout_s * 1000)
    return {
        "compile_memory_limit": Limits().compile_memory_mb * _MiB,
        "run_memory_limit": settings.memory_mb * _MiB,
        "compile_timeout": compile_ms,
        "run_timeout": run_ms,
        "compile_cpu_time": compile_ms,
        "run_cpu_time": run_ms,
    }


def _limits(body: Mapping[str, Any], settings: Settings) -> RequestedLimits | None:
    configured = _configured(settings)
    given: dict[str, float] = {}
    for constraint in ("memory_limit", "timeout", "cpu_time"):
        for stage in ("compile", "run"):
            name = f"{stage}_{constraint}"
            value = body.get(name)
            if not value:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise JobInvalid(f"If specified, {name} must be a number")
            if value > configured[name]:
                raise JobInvalid(f"{name} cannot exceed the configured limit of {configured[name]}")
            if value > 0:  # 0 or less: livecode's own limit
                given[name] = value
    limits: dict[str, Any] = {}
    timeouts = [given[name] for name in ("run_timeout", "run_cpu_time") if name in given]
    if timeouts and min(timeouts) < configured["run_timeout"]:
        limits["timeout_s"] = min(timeouts) / 1000
    memory = given.get("run_memory_limit")
    if memory is not None and memory < configured["run_memory_limit"]:
        limits["memory_mb"] = max(1, math.ceil(memory / _MiB))
    return RequestedLimits(**limits) if limits else None
