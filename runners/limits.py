"""Limits of one run, and clamping a request's limits to the configured ceiling."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

# request key -> Limits field; a request may lower each of these, never raise it
_REQUEST_FIELDS = {
    "timeout_s": "wall_timeout_s",
    "memory_mb": "memory_mb",
    "max_processes": "max_processes",
    "output_limit_bytes": "output_limit_bytes",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of one run; defaults are SPEC.md's."""

    wall_timeout_s: float = 30.0
    compile_timeout_s: float = 30.0
    memory_mb: int = 256
    compile_memory_mb: int = 1024
    max_processes: int = 64
    output_limit_bytes: int = 102400

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"limit {name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"limit {name} must be positive, got {value!r}")

    def clamp(self, requested: Mapping[str, Any] | None) -> Limits:
        """Return these limits lowered by a request's ``limits`` object (never raised).

        Raises ValueError naming the key for unknown keys, wrong types and non-positive values.
        """
        if not requested:
            return self
        if not isinstance(requested, Mapping):
            raise ValueError("limits must be an object")
        changes: dict[str, Any] = {}
        for key, value in requested.items():
            field = _REQUEST_FIELDS.get(key)
            if field is None:
                allowed = ", ".join(_REQUEST_FIELDS)
                raise ValueError(f"unknown limit {key!r} (allowed: {allowed})")
            if value is None:
                continue
            current = getattr(self, field)
            is_float_field = isinstance(current, float)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"limit {key} must be a number, got {value!r}")
            if not is_float_field and not isinstance(value, int):
                if not float(value).is_integer():
                    raise ValueError(f"limit {key} must be an integer, got {value!r}")
                value = int(value)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"limit {key} must be positive, got {value!r}")
            changes[field] = min(float(value) if is_float_field else value, current)
        return replace(self, **changes)


def cpu_limit_s(wall_timeout_s: float) -> int:
    """A stage's RLIMIT_CPU: a second past its wall timeout. The slot's cgroup gives a program
    one core at most, so the wall timeout ends a busy loop first; at exactly the wall timeout,
    which of the two ended it was a race decided by milliseconds of scheduling (and the error
    said one thing or the other). The limit stays for a sandbox without cgroups."""
    return math.ceil(wall_timeout_s) + 1
