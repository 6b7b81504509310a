"""Pump: moves bytes between a running program and the caller until the run is over.

Reads stdout/stderr in large chunks against the wall deadline, decodes UTF-8 incrementally
(a character is never split across chunks; invalid bytes become U+FFFD), caps each stream,
feeds stdin (initial bytes, then interactive writes and EOF), and obeys Control.cancel(). A tty
run's terminal is one output stream read from its master, its keystrokes are written to the
same master, and Control.resize() resizes it.

The run ends with its exit report, not with EOF on its outputs. A program can keep their write
ends open after every process of the run is gone (in flight in a cycle of Unix sockets, which
only the kernel's collector of such sockets closes, whenever some Unix socket anywhere is
released), so EOF may never come. No process can write to them any more either: what they hold
when the report has come is all they will ever hold, so the pump reads that without waiting.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import os
import select
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from runners import terminal
from runners.control import Control
from runners.errors import RunnerError
from runners.result import Stream

_READ_BYTES = 1 << 20
_PIPE_BYTES = 1 << 20
_HOLD_S = 0.005  # a partial line waits this long for the rest of its writes (python -u: 4 writes)
_HOLD_CHARS = 1 << 16
_KILL_GRACE_S = (
    15.0  # after a kill, the spawner reports within milliseconds; beyond this it is broken
)
F_SETPIPE_SZ = 1031

OnOutput = Callable[[Stream, str], None]


class Process(Protocol):
    """A started program as the pump sees it."""

    # readable when the exit report is available: once no process of the run is left, so
    # nothing writes to the run's outputs any more
    def fileno(self) -> int: ...
    def kill(self) -> None: ...
    def read_report(self) -> object: ...


@dataclass(slots=True)
class _Sink:
    stream: Stream
    limit_bytes: int
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    parts: list[str] = field(default_factory=list)
    size_bytes: int = 0
    is_truncated: bool = False
    held: list[str] = field(default_factory=list)  # decoded, not yet given to on_output
    held_chars: int = 0
    held_since: float = 0.0

    def feed(self, data: bytes) -> tuple[str, bool]:
        """Decode a chunk; return (text, whether the cap was just passed)."""
        if self.is_truncated:
            return "", False
        room = self.limit_bytes - self.size_bytes
        passed = len(data) > room
        if passed:
            data = data[:room]
            self.is_truncated = True  # an incomplete trailing character stays in the decoder
        self.size_bytes += len(data)
        text = self.decoder.decode(data, final=False)
        self.parts.append(text)
        return text, passed

    def hold(self, text: str, now: float) -> None:
        """Keep text until its line is complete, so one print is one chunk."""
        if text:
            if not self.held:
                self.held_since = now
            self.held.append(text)
            self.held_chars += len(text)

    def release(self, now: float, force: bool = False) -> str:
        """Return the held text if it is due: a whole line, large, or held long enough."""
        if not self.held:
            return ""
        due = self.held[-1].endswith("\n") or self.held_chars >= _HOLD_CHARS
        if not (force or due or now - self.held_since >= _HOLD_S):
            return ""
        text = "".join(self.held)
        self.held.clear()
        self.held_chars = 0
        return text

    def finish(self) -> str:
        if self.is_truncated:
            return ""
        text = self.decoder.decode(b"", final=True)
        self.parts.append(text)
        return text


@dataclass(frozen=True, slots=True, kw_only=True)
class Pipes:
    """Our ends of a started process's pipes; pump() closes every one of them."""

    outputs: Mapping[int, Stream]  # read ends, each with the stream it carries
    stdin_fd: int | None = None  # write end of the program's stdin
    stdin_data: bytes = b""  # written first
    keep_stdin_open: bool = False  # interactive: Control.write() adds more until close_stdin()
    # a tty run: the terminal's master (also among `outputs`, and stdin_fd a dup of it); end of
    # input is typed (terminal.EOF_KEY) rather than a closed fd, and Control.resize() applies
    terminal_fd: int | None = None


@dataclass(slots=True)
class Outcome:
    """What the pump saw: output per stream and why it stopped."""

    texts: dict[Stream, str]
    truncated: dict[Stream, bool]
    report: object
    timed_out: bool = False
    cancelled: bool = False
    output_limited: bool = False
    error: BaseException | None = None  # raised by on_output; the run was killed


def make_pipe(*, large: bool) -> tuple[int, int]:
    """Return a close-on-exec pipe (read end, write end); large ones hold 1 MiB."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    if large:
        try:
            fcntl.fcntl(read_fd, F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:
            pass  # over /proc/sys/fs/pipe-max-size: the default size works, only slower
    return read_fd, write_fd


class _WakeFd:
    """A thread's eventfd that wakes its pump, kept for the thread's life: a pipe made and
    closed for each run cost three syscalls, each of which let go of the GIL (issue 14).

    A wake-up left over from an earlier run (none comes once Control._detach has returned, but
    one may not have been read) wakes the next pump once, which then finds nothing to take.
    """

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    def __del__(self, close: Callable[[int], None] = os.close) -> None:
        close(self.fd)  # the thread has ended (os.close bound early: also at interpreter exit)


_thread_wake = threading.local()


def _wake_fd() -> int:
    wake_fd: _WakeFd | None = getattr(_thread_wake, "fd", None)
    if wake_fd is None:
        wake_fd = _thread_wake.fd = _WakeFd()
    return wake_fd.fd


def pump(
    process: Process,
    pipes: Pipes,
    *,
    wall_timeout_s: float,
    output_limit_bytes: int,
    on_output: OnOutput | None = None,
    control: Control | None = None,
    preface: tuple[Stream, str] | None = None,
) -> Outcome:
    """Run the program's I/O to the end and close the pipes' fds; every process is gone after.

    Each output stream is capped at `output_limit_bytes`. `preface` is passed on as output once
    the process has started, before any of its own.
    """
    sinks = {fd: _Sink(stream, output_limit_bytes) for fd, stream in pipes.outputs.items()}
    every_sink = list(sinks.values())
    outcome = Outcome(texts={}, truncated={}, report=None)
    wake_r = _wake_fd()
    poller = select.poll()
    pending = bytearray(pipes.stdin_data)
    keep_stdin_open = pipes.keep_stdin_open
    stdin_eof = False
    stdin_fd = pipes.stdin_fd
    terminal_fd = pipes.terminal_fd
    typed_tail = pipes.stdin_data[-1:]  # the last byte given to stdin, for a terminal's EOF
    killed_at: float | None = None

    def wake() -> None:
        try:
            os.eventfd_write(wake_r, 1)
        except OSError:
            pass  # the counter is full: awake already

    def kill() -> None:
        nonlocal killed_at
        if killed_at is None:
            killed_at = time.monotonic()
            process.kill()

    def emit(stream: Stream, text: str) -> None:
        if text and on_output is not None and outcome.error is None:
            try:
                on_output(stream, text)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the runner after cleanup
                outcome.error = exc
                kill()

    def end_stdin() -> None:
        nonlocal stdin_eof
        if stdin_eof:
            return
        stdin_eof = True
        if terminal_fd is not None:
            # Ctrl-D ends a read; at the start of a line, with nothing read, that is EOF: after
            # a partial line, the first one only hands that line over
            pending.extend(terminal.EOF_KEY * (1 if typed_tail in (b"", b"\n") else 2))

    def take_control() -> None:
        nonlocal pending, typed_tail
        if control is None:
            return
        data, eof, cancelled = control._take(stdin=keep_stdin_open)
        if cancelled and not outcome.cancelled:
            outcome.cancelled = True
            kill()
        pending += data  # nothing unless the stage reads stdin (keep_stdin_open)
        typed_tail = data[-1:] or typed_tail
        if eof:
            end_stdin()
        if terminal_fd is None:
            return  # a size asked for meanwhile stays for the stage with the terminal
        size = control._take_size()
        if size is not None and terminal_fd in sinks:  # not once the terminal has hung up
            try:
                terminal.set_size(terminal_fd, *size)
            except OSError:
                pass  # the program has just ended

    def close_stdin() -> None:
        nonlocal stdin_fd
        if stdin_fd is not None:
            poller.unregister(stdin_fd)
            os.close(stdin_fd)
            stdin_fd = None

    for fd in sinks:
        poller.register(fd, select.POLLIN)
    poller.register(process.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    if stdin_fd is not None:
        os.set_blocking(stdin_fd, False)
        poller.register(stdin_fd, select.POLLOUT)
    if not keep_stdin_open:
        end_stdin()
    deadline = time.monotonic() + wall_timeout_s
    try:
        if control is not None:
            try:
                control._attach(wake)  # calls its on_start
            except BaseException as exc:  # noqa: BLE001 - as from on_output: kill, re-raise later
                outcome.error = exc
                kill()
            take_control()  # what was written or cancelled before the start
        if preface is not None:
            emit(*preface)
        while sinks or outcome.report is None:
            # Polled after the report had come, an output that is not readable is empty for
            # good: its EOF need not come (the module docstring says why it may never). Not
            # in the poll that brought the report: it may have looked at the outputs first.
            has_ended = outcome.report is not None
            now = time.monotonic()
            if killed_at is None and not has_ended and now >= deadline:
                outcome.timed_out = True
                kill()
            if killed_at is not None and now - killed_at > _KILL_GRACE_S:
                raise RunnerError("the sandbox did not end a killed run")
            limit = deadline if killed_at is None else killed_at + _KILL_GRACE_S
            for sink in every_sink:
                if sink.held:
                    limit = min(limit, sink.held_since + _HOLD_S)
            timeout_ms = 0 if has_ended else max(0, int((limit - now) * 1000) + 1)
            if stdin_fd is not None:
                if pending:
                    poller.modify(stdin_fd, select.POLLOUT)
                elif stdin_eof:
                    close_stdin()
                else:
                    poller.modify(stdin_fd, 0)  # still notified of POLLERR (reader gone)
            ready = poller.poll(timeout_ms)
            for fd, events in ready:
                if fd in sinks:
                    _read(fd, sinks, outcome, emit, kill, poller)
                elif fd == wake_r:
                    with contextlib.suppress(BlockingIOError):  # read already
                        os.eventfd_read(wake_r)  # resets the counter
                    take_control()
                elif fd == stdin_fd:
                    if events & (select.POLLERR | select.POLLHUP):
                        pending.clear()
                        close_stdin()
                    elif pending:
                        try:
                            written = os.write(stdin_fd, pending[: 1 << 16])
                            del pending[:written]
                        except BlockingIOError:
                            pass
                        except OSError:  # EPIPE: the program closed its stdin
                            pending.clear()
                            close_stdin()
                elif fd == process.fileno() and outcome.report is None:
                    outcome.report = process.read_report()
                    poller.unregister(fd)
                    close_stdin()
            if has_ended:
                readable = {fd for fd, _events in ready}
                for fd in [fd for fd in sinks if fd not in readable]:
                    _end(fd, sinks, emit, poller)
            now = time.monotonic()
            for sink in every_sink:
                emit(sink.stream, sink.release(now))
    finally:
        if control is not None:
            control._detach(wake)
        close_stdin()
        for fd in list(sinks):
            os.close(fd)
    for sink in every_sink:
        outcome.texts[sink.stream] = "".join(sink.parts)
        outcome.truncated[sink.stream] = sink.is_truncated
    return outcome


def _read(
    fd: int,
    sinks: dict[int, _Sink],
    outcome: Outcome,
    emit: Callable[[Stream, str], None],
    kill: Callable[[], None],
    poller: select.poll,
) -> None:
    sink = sinks[fd]
    try:
        data = os.read(fd, _READ_BYTES)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            return
        data = b""
    if not data:
        _end(fd, sinks, emit, poller)
        return
    now = time.monotonic()
    text, passed = sink.feed(data)
    sink.hold(text, now)
    if passed:
        emit(sink.stream, sink.release(now, force=True))
        outcome.output_limited = True
        kill()


def _end(
    fd: int, sinks: dict[int, _Sink], emit: Callable[[Stream, str], None], poller: select.poll
) -> None:
    """The output of `fd` is complete: pass on what is held, close the fd."""
    sink = sinks.pop(fd)
    now = time.monotonic()
    sink.hold(sink.finish(), now)
    emit(sink.stream, sink.release(now, force=True))
    poller.unregister(fd)
    os.close(fd)
