"""Program: what to run, with its test cases if it has some."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Case:
    """One test case of a program: its stdin and arguments, and the output it should print."""

    stdin: bytes | None = None
    args: tuple[str, ...] = ()
    expected_output: str | None = None  # judged as Judge0 does (cases.judge)


@dataclass(frozen=True, slots=True)
class Program:
    """A program to run: language id or alias, source, stdin, args; interactive keeps stdin open.

    With `tty`, the program runs in a terminal of its own (stdin, stdout and stderr; its output
    is one stream, stdout), of `terminal_size` (cols, rows) when it starts (None: 80x24; a
    Control's resize before the start wins, as it is asked later). With `cases`, it is compiled
    once and run once per case, each in a fresh sandbox with the case's stdin and args (stdin,
    args and interactive are then unused).
    """

    language: str
    source: str
    stdin: bytes | None = None
    args: tuple[str, ...] = ()
    interactive: bool = False
    tty: bool = False
    terminal_size: tuple[int, int] | None = None
    cases: tuple[Case, ...] = ()
