"""Program: what to run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Program:
    """A program to run: language id or alias, source, stdin, args; interactive keeps stdin open.

    With `tty`, the program runs in a terminal of its own (stdin, stdout and stderr; its output
    is one stream, stdout).
    """

    language: str
    source: str
    stdin: bytes | None = None
    args: tuple[str, ...] = ()
    interactive: bool = False
    tty: bool = False
