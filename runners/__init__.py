"""runners: run untrusted Python, JavaScript and C++ programs in a sandbox, streaming output.

A library: no HTTP, database, broker or environment variables. Usage::

    with Sandbox(SandboxConfig()) as sandbox:
        result = sandbox.run(Program("python", "print(1)"), Limits(), on_output=print)
"""

from __future__ import annotations

from runners.control import Control
from runners.errors import RunnerError, SandboxUnavailable, ToolchainMissing, UnknownLanguage
from runners.languages import Language, detect_languages, resolve_language
from runners.limits import Limits
from runners.program import Case, Program
from runners.result import ExecutionStatus, Reason, Result, Stream, Verdict
from runners.sandbox import Sandbox, SandboxConfig
from runners.terminal import (
    DEFAULT_COLS as DEFAULT_TERMINAL_COLS,
    DEFAULT_ROWS as DEFAULT_TERMINAL_ROWS,
    MAX_COLS as MAX_TERMINAL_COLS,
    MAX_ROWS as MAX_TERMINAL_ROWS,
)
from runners.warm import WarmConfig

__all__ = [
    "DEFAULT_TERMINAL_COLS",
    "DEFAULT_TERMINAL_ROWS",
    "MAX_TERMINAL_COLS",
    "MAX_TERMINAL_ROWS",
    "Case",
    "Control",
    "Language",
    "Limits",
    "Program",
    "Reason",
    "Result",
    "RunnerError",
    "Sandbox",
    "SandboxConfig",
    "SandboxUnavailable",
    "ExecutionStatus",
    "Stream",
    "ToolchainMissing",
    "UnknownLanguage",
    "Verdict",
    "WarmConfig",
    "detect_languages",
    "resolve_language",
]
