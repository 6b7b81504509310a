"""Program: what to run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Program:
    """A program to run: language id or alias, source, stdin, args; interactive keeps stdin open."""

    language: str
    source: str
    stdin: bytes | None = None
    args: tuple[str, ...] = ()
    interactive: bool = False
