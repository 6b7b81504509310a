"""Exceptions of runners: our faults and bad requests, never the user program's.

A user program failing is a ``Result``, not an exception. The tree::

    RunnerError                 something on our side (or the request) prevents the run
    ├── SandboxUnavailable      bwrap missing or not working (and mode="none" was not asked
    │                           for), gcc missing (the spawner is built with it), or an unsafe
    │                           work root
    ├── ToolchainMissing        the language is known but its compiler/interpreter is not installed
    └── UnknownLanguage         no language has this id or alias (the caller's fault)
"""

from __future__ import annotations


class RunnerError(Exception):
    """Base of every exception raised by runners."""


class SandboxUnavailable(RunnerError):
    """The sandbox cannot be used here (bwrap or gcc missing, bwrap broken, unsafe work root)."""


class ToolchainMissing(RunnerError):
    """The language exists but its toolchain is not installed."""


class UnknownLanguage(RunnerError):
    """No language has this id or alias."""
