"""Limits: SPEC defaults and clamping a request."""

from __future__ import annotations

import pytest

from runners import Limits


def test_defaults_are_the_spec_defaults() -> None:
    """A run that asks for no limits gets the SPEC's: 30 s, 256 MB, 64 processes, 100 KiB."""
    limits = Limits()
    assert (limits.wall_timeout_s, limits.memory_mb, limits.max_processes) == (30.0, 256, 64)
    assert limits.output_limit_bytes == 102400
    assert limits.compile_timeout_s == 30.0


def test_clamp_lowers_but_never_raises() -> None:
    """A run may ask for lower limits than the server's, never for higher ones."""
    limits = Limits().clamp({"timeout_s": 5, "memory_mb": 4096, "output_limit_bytes": 10})
    assert limits.wall_timeout_s == 5.0
    assert isinstance(limits.wall_timeout_s, float)
    assert limits.memory_mb == 256
    assert limits.output_limit_bytes == 10


def test_clamp_of_nothing_is_identity() -> None:
    """A run that asks for no limit, or for none in particular, gets the server's."""
    assert Limits().clamp(None) == Limits()
    assert Limits().clamp({}) == Limits()


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ({"timeout_s": 0}, "positive"),
        ({"memory_mb": -1}, "positive"),
        ({"max_processes": "8"}, "number"),
        ({"max_processes": True}, "number"),
        ({"memory_mb": 1.5}, "integer"),
        ({"cpu": 1}, "unknown limit"),
        ({"timeout_s": float("nan")}, "positive"),
    ],
)
def test_clamp_rejects_bad_values(requested: dict[str, object], message: str) -> None:
    """A limit that is no positive number, or no limit we know, is refused saying why."""
    with pytest.raises(ValueError, match=message):
        Limits().clamp(requested)
