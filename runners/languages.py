"""Language recipes (how to compile and run each language) and toolchain detection.

Adding a language is adding one ``Language`` to ``_RECIPES``. Argument templates may use
``{source}`` (the source file inside the sandbox), ``{binary}`` (the compiled program),
``{heap_cap}`` (a heap-cap flag, given only when no memory cgroup caps the run; an argument
that formats to "" is dropped) and ``{runtime}`` (our support files).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass, replace

from runners.errors import UnknownLanguage

_VERSION_RE = re.compile(r"(\d+\.\d+(?:\.\d+)?)")


@dataclass(frozen=True, slots=True)
class Language:
    """One language: identity, detected version, and the recipe to compile and run it."""

    id: str
    name: str
    version: str | None
    aliases: tuple[str, ...]
    available: bool
    toolchain: str = ""  # the binary that must exist (never a version-manager shim)
    version_argv: tuple[str, ...] = ()
    source_file: str = "main"
    compile_argv: tuple[str, ...] | None = None
    run_argv: tuple[str, ...] = ()
    # V8 reserves far more virtual memory than it uses: cap node with the memcg and its heap flag
    limit_address_space: bool = True
    heap_fraction: float = 0.75
    # stderr text that means the program ran out of memory inside its own runtime
    heap_cap: str = ""  # flag capping the heap, for runs without a memory cgroup
    oom_markers: tuple[str, ...] = ()
    # runs may be forked from a warm interpreter (warm.py) that run_argv would have started
    warm_start: bool = False

    @property
    def is_compiled(self) -> bool:
        """Whether this language has a compile stage."""
        return self.compile_argv is not None


# g++ flags are part of the binary cache key and must match the precompiled header's
CXX_FLAGS = ("-O2", "-std=gnu++17")

_RECIPES: tuple[Language, ...] = (
    Language(
        id="python",
        name="Python",
        version=None,
        aliases=("py", "python3"),
        available=False,
        toolchain="/usr/bin/python3",
        version_argv=("/usr/bin/python3", "--version"),
        source_file="main.py",
        # -u: output streams without the program flushing; -I: ignore PYTHON* env and user site
        run_argv=("/usr/bin/python3", "-u", "-I", "{source}"),
        oom_markers=("MemoryError",),
        warm_start=True,
    ),
    Language(
        id="javascript",
        name="JavaScript",
        version=None,
        aliases=("js", "node", "nodejs"),
        available=False,
        toolchain="/usr/bin/node",
        version_argv=("/usr/bin/node", "--version"),
        source_file="main.js",
        # Any V8 flag changes node's flag hash, which makes it reject its built-in code cache
        # (+7 ms a start, measured): the heap cap is passed only when no memory cgroup exists.
        run_argv=("/usr/bin/node", "{heap_cap}", "{source}"),
        heap_cap="--max-old-space-size={heap_mb}",
        limit_address_space=False,
        oom_markers=("JavaScript heap out of memory", "Fatal process out of memory"),
    ),
    Language(
        id="c++",
        name="C++",
        version=None,
        aliases=("cpp", "cxx", "g++"),
        available=False,
        toolchain="/usr/bin/g++",
        version_argv=("/usr/bin/g++", "-dumpfullversion"),
        source_file="main.cpp",
        # {runtime}/linebuf.o makes stdout line-buffered on a pipe; -I{runtime}/pch finds the PCH
        compile_argv=(
            "/usr/bin/g++",
            *CXX_FLAGS,
            "-I{runtime}/pch",
            "-o",
            "{binary}",
            "{source}",
            "{runtime}/linebuf.o",
        ),
        run_argv=("{binary}",),
        oom_markers=("std::bad_alloc",),
    ),
)


@functools.cache
def detect_languages() -> tuple[Language, ...]:
    """Probe each toolchain's real version once; a missing toolchain gives available=False."""
    return tuple(_detect(recipe) for recipe in _RECIPES)


def resolve_language(name: str) -> Language:
    """Find a language by id or alias (case-insensitive); raise UnknownLanguage otherwise."""
    key = name.strip().lower() if isinstance(name, str) else ""
    for language in detect_languages():
        if key == language.id or key in language.aliases:
            return language
    known = ", ".join(language.id for language in _RECIPES)
    raise UnknownLanguage(f"unknown language {name!r} (known: {known})")


def _detect(recipe: Language) -> Language:
    if not os.access(recipe.toolchain, os.X_OK):
        return recipe
    try:
        probe = subprocess.run(
            recipe.version_argv,
            capture_output=True,
            text=True,
            timeout=10,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return recipe
    match = _VERSION_RE.search(probe.stdout + probe.stderr)
    if probe.returncode != 0 or match is None:
        return recipe
    return replace(recipe, version=match.group(1), available=True)
