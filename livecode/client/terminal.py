"""`livecode run FILE` and `livecode languages`: the client from a shell.

`livecode run` streams the program's stdout to stdout and its stderr (and compiler messages)
to stderr as the program writes them, forwards the terminal's input to it, and exits as the
program did. What else can end a run gets an exit code of its own and one line on stderr:

    0-255   the program's exit status (reason exit or runtime_error)
    128+N   the program was killed by signal N
    120     internal_error: the server could not run the program
    121     cancelled (by another client; Ctrl-C here gives 130)
    122     compile_error (the compiler's messages are on stderr)
    123     output_limit: the program wrote more than the server keeps
    124     timeout (as timeout(1))
    125     memory_limit
    130     interrupted with Ctrl-C: the run was cancelled (we end by SIGINT, as Python does
            after a Ctrl-C it does not catch: a shell shows 130, a script stops)
    141     our stdout was closed (`| head`): the run was cancelled, as SIGPIPE would end it
    2       usage: bad arguments, an unreadable file, an unknown extension, or a request the
            server refused (bad_request, too_large, not_found, conflict)
    69      the server cannot be reached, or the connection was lost for good
    70      the server failed answering (internal)
    75      the server is busy (rate_limited, unavailable): try again later
    77      unauthorized: no key, or a wrong one (--key, LIVECODE_API_KEY)

Starting fast is part of the job (within ~100 ms of `python3 hello.py`): this module imports
no part of the server, and the client only once a command runs.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import os
import select
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

# typing costs `livecode run` 3 ms of start, and type checkers read this constant as its own.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

    from livecode.client.models import Event, Execution
    from livecode.client.sync import Run

__all__ = ["COMMANDS", "EXIT_CODES", "add_commands", "exit_code", "main", "split_program_args"]

# The subcommands of `livecode` this module carries out (add_commands, main).
COMMANDS = ("run", "languages")

EXTENSIONS = {
    ".py": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cpp": "c++",
    ".cc": "c++",
    ".cxx": "c++",
}
# Final reasons that are not the program's own exit status (see the table above).
EXIT_CODES = {
    "internal_error": 120,
    "cancelled": 121,
    "compile_error": 122,
    "output_limit": 123,
    "timeout": 124,
    "memory_limit": 125,
}
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a program that wrote to a closed pipe
EXIT_USAGE = 2
EXIT_UNREACHABLE = 69  # sysexits.h EX_UNAVAILABLE
EXIT_SERVER_FAILED = 70  # EX_SOFTWARE
EXIT_BUSY = 75  # EX_TEMPFAIL
EXIT_UNAUTHORIZED = 77  # EX_NOPERM
# A server error's code -> our exit status (any other code: EXIT_USAGE, a refused request).
_ERROR_EXITS = {
    "internal": EXIT_SERVER_FAILED,
    "rate_limited": EXIT_BUSY,
    "unavailable": EXIT_BUSY,
    "unauthorized": EXIT_UNAUTHORIZED,
}
_MESSAGES = {
    "internal_error": "the server could not run the program",
    "cancelled": "the run was cancelled",
    "compile_error": "compile error",
    "output_limit": "output limit exceeded: the program was stopped, its output cut short",
    "timeout": "time limit exceeded: the program was stopped",
    "memory_limit": "memory limit exceeded: the program was stopped",
}
# Interactive stdin goes out at most this often (each send is two messages, and the server
# closes a socket sending over 200 a second); what arrives in between goes in the next send.
STDIN_SEND_INTERVAL_S = 0.02
STDIN_CHUNK_BYTES = 64 << 10


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `run` and `languages` to the `livecode` command's subcommands."""
    run = commands.add_parser(
        "run",
        help="run a file on a livecode server, streaming its output",
        description="Run FILE on a livecode server: its stdout and stderr stream here as it "
        "writes them, the terminal's input goes to it, and the exit status is the program's.",
        epilog="exit status:\n" + _exit_status_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("file", help="the source file (.py, .js, .mjs, .cpp, .cc, .cxx)")
    run.add_argument("args", nargs="*", help="arguments for the program (put them after --)")
    run.add_argument("-l", "--language", help="language id or alias (default: from FILE's name)")
    given = run.add_mutually_exclusive_group()
    given.add_argument("--stdin", metavar="TEXT", help="the program's whole stdin")
    given.add_argument("--stdin-file", metavar="PATH", help="a file (- for this stdin) as stdin")
    run.add_argument("--json", action="store_true", help="print the events as JSON lines")
    run.add_argument("--timeout-s", type=float, help="wall time limit (lower than the server's)")
    run.add_argument("--memory-mb", type=int, help="memory limit (lower than the server's)")
    _server_options(run)
    languages = commands.add_parser("languages", help="the languages a livecode server runs")
    languages.add_argument("--json", action="store_true", help="print the server's JSON")
    _server_options(languages)


def split_program_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split at the first `--`: what follows is the program's, verbatim (argparse would drop a
    second `--`)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]


def main(args: argparse.Namespace) -> int:
    """Carry out `run` or `languages`; return the exit status (interrupted: see below)."""
    status = _carry_out(args)
    if status == EXIT_INTERRUPTED:
        _die_of_sigint()
    return status


def _die_of_sigint() -> None:
    """End as SIGINT would have ended us, once the run is cancelled: a shell then shows 130,
    and a script that ran us stops too (bash goes on after a child that merely exits 130).
    Python ends so after an uncaught KeyboardInterrupt; we caught it to cancel the run.
    Nothing is flushed: each event was as it was shown, and a flush to a pipe nobody reads
    would never end."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def _carry_out(args: argparse.Namespace) -> int:
    from livecode.client.errors import ConnectionLost, LivecodeError

    try:
        if args.command == "languages":
            return _languages(args)
        return _run(args)
    except LivecodeError as exc:
        print(f"livecode: {exc.code}: {exc.message}", file=sys.stderr)
        return _ERROR_EXITS.get(exc.code, EXIT_USAGE)
    except ConnectionLost as exc:
        print(f"livecode: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except _UsageError as exc:
        print(f"livecode run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before the run started (once it has, _follow cancels it)
        return EXIT_INTERRUPTED


def exit_code(execution: Execution) -> int:
    """The exit status `livecode run` ends with for a final execution (the table above)."""
    if execution.reason in EXIT_CODES:
        return EXIT_CODES[execution.reason]
    if execution.exit_code is not None:
        return execution.exit_code & 0xFF
    if execution.signal:
        return 128 + execution.signal
    return 0 if execution.status == "COMPLETED" else 1


class _UsageError(Exception):
    pass


def _exit_status_table() -> str:
    """The table of exit statuses in this module's docstring."""
    assert __doc__ is not None
    return next(part for part in __doc__.split("\n\n") if part.lstrip().startswith("0-255"))


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("LIVECODE_SERVER") or "http://127.0.0.1:8000",
        help="the server's URL (LIVECODE_SERVER, default http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("LIVECODE_API_KEY"),
        help="API key, sent as Authorization: Bearer (LIVECODE_API_KEY)",
    )


def _languages(args: argparse.Namespace) -> int:
    from livecode.client import rest
    from livecode.client.models import Language

    where = rest.endpoints(args.server, args.key)
    data = rest.get_json(where, "/languages", timeout_s=30.0)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = [("ID", "NAME", "VERSION", "ALIASES")]
    for language in map(Language.from_json, data):
        version = (language.version or "") if language.available else "(unavailable)"
        rows.append((language.id, language.name, version, ", ".join(language.aliases)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0


def _run(args: argparse.Namespace) -> int:
    language = args.language or EXTENSIONS.get(os.path.splitext(args.file)[1].lower())
    if language is None:
        known = ", ".join(EXTENSIONS)
        raise _UsageError(f"cannot tell the language of {args.file} ({known}); use -l LANGUAGE")
    try:
        with open(args.file, encoding="utf-8") as file:
            source = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise _UsageError(f"cannot read {args.file}: {exc}") from None
    stdin, is_interactive = _stdin(args)

    from livecode.client.models import Limits
    from livecode.client.sync import Client

    limits = None
    if args.timeout_s is not None or args.memory_mb is not None:
        limits = Limits(timeout_s=args.timeout_s, memory_mb=args.memory_mb)
    interrupts = _Interrupts()
    with _interrupts_handled_by(interrupts), Client(args.server, api_key=args.key) as client:
        session = client.create_session(language, source)
        if interrupts.count:
            return EXIT_INTERRUPTED  # nothing runs yet
        run = client.run(
            session.id,
            stdin=stdin,
            args=[*args.args, *args.program_args],
            limits=limits,
            interactive=is_interactive,
        )
        interrupts.run = run
        if interrupts.count:
            # Came while the run was being queued: it runs, and nobody would watch it.
            run.cancel()
            return EXIT_INTERRUPTED
        if is_interactive:
            threading.Thread(target=_forward_stdin, args=(run,), daemon=True).start()
        return _follow(run, _Printer(args.json), interrupts)


def _stdin(args: argparse.Namespace) -> tuple[str | None, bool]:
    """The run's stdin, and whether to run it interactive: given text or file, a redirected
    file (read at once), nothing (/dev/null, closed), else the terminal or a pipe, forwarded."""
    if args.stdin is not None:
        return args.stdin, False
    if args.stdin_file is not None:
        try:
            if args.stdin_file == "-":
                return _text(sys.stdin.buffer.read()), False
            with open(args.stdin_file, "rb") as file:
                return _text(file.read()), False
        except OSError as exc:
            raise _UsageError(f"cannot read {args.stdin_file}: {exc}") from None
    try:
        mode = os.fstat(0).st_mode
    except OSError:  # no stdin at all
        return None, False
    if stat.S_ISREG(mode):
        return _text(sys.stdin.buffer.read()), False
    if stat.S_ISCHR(mode) and not os.isatty(0):  # /dev/null
        return None, False
    return None, True


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _follow(run: Run, printer: _Printer, interrupts: _Interrupts) -> int:
    """Show the run's events until it finishes; Ctrl-C cancels it (twice: leave at once)."""
    while run.result is None:
        try:
            for event in run.events():
                interrupts.is_showing = run.result is None  # `finished` is shown whole
                printer.show(event)
                interrupts.is_showing = False
        except KeyboardInterrupt:
            interrupts.is_showing = False
            if interrupts.count > 1:
                return EXIT_INTERRUPTED
            print("\nlivecode: cancelling (Ctrl-C again to leave now)", file=sys.stderr)
            run.cancel()
        except BrokenPipeError:
            # Nobody reads our stdout any more (`| head`): stop the program, as SIGPIPE would.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
            run.cancel()
            return EXIT_BROKEN_PIPE
    if interrupts.count:
        return EXIT_INTERRUPTED
    reason = run.result.reason
    if reason in _MESSAGES:
        detail = run.result.error if reason == "internal_error" and run.result.error else ""
        printer.notice(_MESSAGES[reason] + (f": {detail}" if detail else ""))
    return exit_code(run.result)


class _Interrupts:
    """Ctrl-C in `livecode run`: a SIGINT handler. The first cancels the run: between two
    events (Run.interrupt), so that none is lost, or out of a write of one, which a pipe
    nobody reads (`| less`) may never end; before the run is queued, once it is. The second
    leaves at once, wherever we are."""

    def __init__(self) -> None:
        self.count = 0
        self.run: Run | None = None
        self.is_showing = False  # an event taken from the run is being written

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1 or self.is_showing:
            raise KeyboardInterrupt
        if self.run is not None:
            self.run.interrupt()


@contextlib.contextmanager
def _interrupts_handled_by(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """SIGINT calls `handler` in the block, where Python's own would raise KeyboardInterrupt
    (not where it is ignored: started in the background, we stay deaf to it)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class _Printer:
    """Writes each event where it belongs: output bytes as they come, or JSON lines."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.attempt: int | None = None
        self.is_mid_line = False  # the output shown last did not end its line
        self.streams: dict[str, BinaryIO] = {
            "stdout": sys.stdout.buffer,
            "stderr": sys.stderr.buffer,
            "compile": sys.stderr.buffer,
        }

    def show(self, event: Event) -> None:
        from livecode.client.models import Output, Status

        if self.as_json:
            sys.stdout.write(json.dumps(event.raw, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif isinstance(event, Output):
            stream = self.streams.get(event.stream, sys.stderr.buffer)
            stream.write(event.data.encode())
            stream.flush()
            self.is_mid_line = not event.data.endswith("\n")
        elif isinstance(event, Status) and event.status == "RUNNING" and event.attempt:
            if self.attempt is not None and event.attempt > self.attempt:
                # The output above is the lost attempt's; the stored output is the last one's.
                self.notice(f"the run started again (attempt {event.attempt})")
            self.attempt = event.attempt

    def notice(self, message: str) -> None:
        """One line of our own on stderr, on a line of its own."""
        print(f"{chr(10) if self.is_mid_line else ''}livecode: {message}", file=sys.stderr)
        self.is_mid_line = False


def _forward_stdin(run: Run, fd: int = 0) -> None:
    """Send what arrives on our stdin to the program's, then EOF; stop once it has finished."""
    from livecode.client.errors import Conflict, ConnectionLost, LivecodeError

    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    is_eof = False
    sent_at = 0.0
    try:
        while not is_eof:
            data, is_eof = _read_batch(fd, sent_at + STDIN_SEND_INTERVAL_S)
            text = decoder.decode(data, final=is_eof)
            if text or is_eof:
                run.send_stdin(text, eof=is_eof)
                sent_at = time.monotonic()
    except Conflict:
        return  # the program has finished: it reads no more
    except (LivecodeError, ConnectionLost, OSError) as exc:
        if run.result is None:  # else the run ended meanwhile, and the client with it
            print(f"livecode: stdin not forwarded: {exc}", file=sys.stderr)


def _read_batch(fd: int, not_before: float) -> tuple[bytes, bool]:
    """Block for some input, then take what else arrives until `not_before` (monotonic)."""
    data = os.read(fd, STDIN_CHUNK_BYTES)
    if not data:
        return b"", True
    while len(data) < STDIN_CHUNK_BYTES:
        wait_s = not_before - time.monotonic()
        readable = wait_s > 0 and select.select([fd], [], [], wait_s)[0]
        if not readable:
            break
        more = os.read(fd, STDIN_CHUNK_BYTES - len(data))
        if not more:
            return data, True
        data += more
    return data, False
