"""The subset of npm's semver ranges that Piston clients send as a runtime ``version``.

``*``, ``x`` and ``""`` match everything; ``3``, ``3.x``, ``3.11.*`` are X-ranges; ``3.11.2`` or
``=3.11.2`` exact; ``>=``, ``>``, ``<=``, ``<`` compare; ``^`` keeps the first non-zero part
and ``~`` the minor; comparators separated by spaces must all hold, ranges separated by ``||``
any. Anything else matches nothing (Piston then answers "runtime is unknown").
"""

from __future__ import annotations

import re

__all__ = ["parse_version", "satisfies"]

Version = tuple[int, int, int]

_COMPARATOR = re.compile(r"(>=|<=|>|<|=|\^|~)?\s*v?([0-9xX*]+(?:\.[0-9xX*]+){0,2})")


def parse_version(text: str) -> Version | None:
    """A version "3.11.2" (missing parts are 0); None when it is not one."""
    parts = text.strip().lstrip("v").split("-", 1)[0].split(".")
    if not 1 <= len(parts) <= 3 or not all(part.isdigit() for part in parts):
        return None
    numbers = [int(part) for part in parts] + [0] * (3 - len(parts))
    return numbers[0], numbers[1], numbers[2]


def satisfies(version: str, selector: str) -> bool:
    """Whether the version is in the range the selector names."""
    parsed = parse_version(version)
    if parsed is None:
        return False
    return any(_all_hold(parsed, part.strip()) for part in selector.split("||"))


def _all_hold(version: Version, range_: str) -> bool:
    if range_ in ("", "*", "x", "X"):
        return True
    position = 0
    held = True
    while position < len(range_):
        match = _COMPARATOR.match(range_, position)
        if match is None:
            return False
        held = held and _holds(version, match.group(1) or "", match.group(2))
        position = match.end()
        while position < len(range_) and range_[position] == " ":
            position += 1
    return held


def _holds(version: Version, operator: str, text: str) -> bool:
    parts = text.split(".")
    known = []
    for part in parts:
        if not part.isdigit():
            break  # an x, X or * and everything after it are wildcards
        known.append(int(part))
    low = tuple(known + [0] * (3 - len(known)))
    if operator in ("", "=") or (operator in ("^", "~") and len(known) < 3 and not known):
        return tuple(version[: len(known)]) == tuple(known)
    if operator == ">=":
        return version >= low
    if operator == ">":
        return version > low if len(known) == 3 else version[: len(known)] > tuple(known)
    if operator == "<":
        return version < low
    if operator == "<=":
        return version <= low if len(known) == 3 else version[: len(known)] <= tuple(known)
    if operator == "~":
        kept = max(1, min(len(known), 2))
    else:  # ^: the first non-zero part (or the last given one) stays
        kept = next((i + 1 for i, number in enumerate(known) if number != 0), len(known))
    return version >= low and version[:kept] == tuple(known[:kept])
