"""A stage of a run (the compile, the execution, or the sandbox's probe) and how it ended.

The values the runner hands to a slot and gets back; they know nothing of how a slot isolates.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Stage:
    """One process to start in a slot: a compile, an execution, or the sandbox's probe."""

    argv: tuple[str, ...]  # templates: {source} {binary} {runtime} {heap_cap}
    source_name: str
    wall_timeout_s: float
    memory_mb: int
    max_processes: int
    file_size_bytes: int
    limit_address_space: bool
    source: bytes = b""  # given to the process at {source}; empty: no source file at all
    binary: str | None = None  # execution: host path of the compiled program, seen at {binary}
    out_dir: str | None = None  # compile: host dir, writable, where {binary} is produced
    args: tuple[str, ...] = ()  # the program's own arguments: passed as they are, never formatted
    heap_cap: str = ""  # template of the heap-cap flag, used when no memory cgroup caps the run
    # a tty run: host path of ttyinit (terminal.py), started in front of the command, with a
    # unix socket as stdin to send the terminal's master through
    tty_init: str | None = None
    # a Python run a slot may fork from its warm interpreter (warm.py) instead of starting cold
    warm: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitReport:
    """How the stage's processes ended, with what they used."""

    exit_code: int | None
    signal: int | None
    cpu_time_ms: int | None
    memory_kb: int | None
    oom_killed: bool
