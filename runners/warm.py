"""Warm start for Python: each slot's warm interpreter (warm.c), how it is built and asked.

A Python run on a slot with warm start is forked from an interpreter initialised once as
``python3 -u -I /box/main.py`` would be, inside bwrap, instead of starting python3 (about 10 ms of
CPU). warm.c says how each run gets namespaces of its own and why it cannot reach the
interpreter; slot.py recycles the interpreter every ``max_runs`` runs or ``max_age_s`` seconds
(a fresh hash seed) and replaces it when it dies or misbehaves.

The interpreter runs in a warm spawner of its own, with a host uid (62000 + slot index) and
cgroups (``livecode/warmN``) apart from the slot's cold runs: its processes count against no
cold run's limits, and a cold run's sweep never reaches it.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass

from runners.errors import RunnerError, SandboxUnavailable
from runners.spawner import build_c

logger = logging.getLogger(__name__)

WARM_UID_BASE = 62000
# the interpreter's processes (bwrap, its init, the interpreter) and each run's pid 1
WARM_PROCESSES = 3
RUN_INIT_PROCESSES = 1
_PYTHON = "/usr/bin/python3.11"
_CONFIG = "/usr/lib/python3.11/config-3.11-x86_64-linux-gnu"
# the static library /usr/bin/python3.11 is built from: the same code, not the slower -fPIC one
_LINK = (
    "-I/usr/include/python3.11",
    "-no-pie",  # as python3.11: -pie needs libpython3.11-pic.a, 10-18% slower (README)
    "-Wl,--export-dynamic",  # extension modules find the interpreter's symbols in the binary
    "-Wl,-z,now",  # every symbol bound in the interpreter: not again, in a copied page, each run
    f"{_CONFIG}/libpython3.11.a",
    "-lz",
    "-lexpat",
    "-lm",
    "-ldl",
    "-lpthread",
    "-lutil",
)

# no libc (warm_init.c says why)
_INIT_FLAGS = ("-static", "-nostdlib", "-fno-stack-protector")


@dataclass(frozen=True, slots=True)
class WarmConfig:
    """Warm start of Python runs: on or off, and when an interpreter is replaced."""

    enabled: bool = True
    max_runs: int = 200
    max_age_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_runs < 1:
            raise ValueError(f"warm max_runs must be at least 1, got {self.max_runs}")
        if not self.max_age_s > 0:
            raise ValueError(f"warm max_age_s must be positive, got {self.max_age_s}")


@dataclass(frozen=True, slots=True)
class WarmBinaries:
    """The compiled warm interpreter (warm.c) and the pid 1 its runs become (warm_init.c)."""

    interpreter: str
    init: str


def build(work_root: str) -> WarmBinaries | None:
    """The compiled warm interpreter and its runs' init, or None (logged) when this host cannot
    build them: it needs /usr/bin/python3 to be Python 3.11 with its static library and headers
    (Debian/Ubuntu: python3.11-dev), on x86-64."""
    if os.path.realpath("/usr/bin/python3") != _PYTHON or not os.path.exists(
        f"{_CONFIG}/libpython3.11.a"
    ):
        logger.warning(
            "warm start of Python is off: it needs /usr/bin/python3 to be %s with its static "
            "library (install python3.11-dev)",
            _PYTHON,
        )
        return None
    try:
        return WarmBinaries(
            interpreter=build_c(work_root, "warm.c", "warm", mode=0o755, flags=_LINK),
            init=build_c(work_root, "warm_init.c", "warm-init", mode=0o755, flags=_INIT_FLAGS),
        )
    except SandboxUnavailable as exc:
        logger.warning("warm start of Python is off: %s", exc)
        return None


def encode_request(rlimits: Sequence[tuple[int, int, int]], args: Sequence[str]) -> bytes:
    """A run request for the interpreter (warm.c): rlimits, then the program's arguments."""
    if any("\0" in arg for arg in args):
        raise RunnerError("cannot start the program: an argument contains a NUL byte")
    fields = [
        str(len(rlimits)),
        *(str(number) for limit in rlimits for number in limit),
        str(len(args)),
        *args,
    ]
    return "".join(field + "\0" for field in fields).encode("utf-8", "surrogateescape")


def interpreter_rlimits() -> Sequence[tuple[int, int, int]]:
    """The interpreter's own rlimits: a run can only lower its hard limits, so they are the
    host's but for core files."""
    return [
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, 256, 256),
    ]
