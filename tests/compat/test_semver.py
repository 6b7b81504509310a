"""Piston's version selectors: the semver ranges its clients send."""

from __future__ import annotations

import pytest

from livecode.compat.semver import parse_version, satisfies


@pytest.mark.parametrize(
    ("selector", "matches", "misses"),
    [
        ("*", ["0.0.1", "3.11.2"], []),
        ("", ["3.11.2"], []),
        ("3.11.2", ["3.11.2"], ["3.11.3", "3.1.2"]),
        ("=3.11.2", ["3.11.2"], ["3.11.1"]),
        ("3", ["3.0.0", "3.99.1"], ["2.9.9", "4.0.0"]),
        ("3.x", ["3.11.2"], ["4.0.0"]),
        ("3.11.*", ["3.11.0", "3.11.9"], ["3.12.0"]),
        (">=3.10", ["3.10.0", "4.0.0"], ["3.9.9"]),
        (">3", ["4.0.0"], ["3.99.0"]),
        ("<3.1", ["3.0.9"], ["3.1.0"]),
        ("<=3", ["3.99.0"], ["4.0.0"]),
        ("^3.2.1", ["3.2.1", "3.9.0"], ["3.2.0", "4.0.0"]),
        ("^0.2.3", ["0.2.9"], ["0.3.0"]),
        ("~3.11", ["3.11.0", "3.11.7"], ["3.12.0"]),
        ("~1", ["1.9.9"], ["2.0.0"]),
        (">=3 <4", ["3.5.0"], ["4.0.0", "2.0.0"]),
        ("2.x || 3.11.x", ["2.7.0", "3.11.1"], ["3.10.0"]),
        ("latest", [], ["3.11.2"]),
    ],
)
def test_ranges(selector: str, matches: list[str], misses: list[str]) -> None:
    """Each range holds for the versions npm's semver puts in it, and only those."""
    assert all(satisfies(version, selector) for version in matches)
    assert not any(satisfies(version, selector) for version in misses)


def test_versions() -> None:
    """Versions are two or three numbers; anything else is none."""
    assert parse_version("12") == (12, 0, 0)
    assert parse_version("v20.20.2") == (20, 20, 2)
    assert parse_version("3.11.2-rc1") == (3, 11, 2)
    assert parse_version("three") is None
