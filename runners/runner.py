"""One run, top to bottom: compile (C++, or a cache hit) -> execute (once, or once per case, each
in a fresh sandbox) -> collect -> Result.

A run's test cases go on its own slot and, side by side, on slots the pool can spare (pool.py
says which), each borrowed for one case. Their output is passed on in case order, one call at
a time: the first unfinished case's as it comes, a later case's once those before it ended
(cases.InOrder).

Knows nothing of isolation: it hands each ``Stage`` to a slot of the sandbox and pumps the I/O;
a tty stage's I/O goes through the terminal ttyinit hands over (terminal.py).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from runners import cases, terminal
from runners.cache import BinaryCache
from runners.control import Control
from runners.errors import RunnerError
from runners.languages import CXX_FLAGS, Language
from runners.limits import Limits, cpu_limit_s
from runners.program import Program
from runners.pump import OnOutput, Outcome, Pipes, Process, make_pipe, pump
from runners.result import ExecutionStatus, Reason, Result, Stream
from runners.stage import ExitReport, Stage

logger = logging.getLogger(__name__)

_RUN_FILE_BYTES = 16 << 20
_COMPILE_FILE_BYTES = 64 << 20
_COMPILE_MIN_PROCESSES = 16  # g++ runs cc1plus, as and ld (collect2) one after another
_OOM_TAIL_CHARS = 4096

# A case's output: (case index, stream, text)
OnCaseOutput = Callable[[int, Stream, str], None]


class Slot(Protocol):
    """What the runner needs from a sandbox slot."""

    uid: int | None

    def start(self, stage: Stage, *, stdin_fd: int, stdout_fd: int, stderr_fd: int) -> Process: ...


_SlotT = TypeVar("_SlotT", bound=Slot)


class Lender(Protocol[_SlotT]):
    """Where a run's test cases borrow more slots (the sandbox's pool)."""

    def lend(self) -> _SlotT | None: ...

    def release(self, slot: _SlotT) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Workspace:
    """Where compiled binaries are made (scratch_dir) and kept between runs (cache), and the
    ttyinit of tty runs (None: tty runs are refused)."""

    cache: BinaryCache
    scratch_dir: str
    tty_init: str | None = None


def run_program(
    slot: Slot,
    program: Program,
    language: Language,
    limits: Limits,
    *,
    workspace: Workspace,
    on_output: OnOutput | None = None,
    on_case_output: OnCaseOutput | None = None,
    control: Control | None = None,
    lender: Lender[Any] | None = None,
) -> Result:
    """Compile if needed, execute (each case, if any), and return the Result; every process is
    gone on return. A case's output goes to `on_case_output` (else to `on_output`), the
    compiler's to `on_output`; calls to them never overlap, but cases borrowed from `lender`
    make them from threads of their own."""
    if program.tty and (program.cases or workspace.tty_init is None):
        without = "with test cases" if program.cases else "here (no ttyinit)"
        raise RunnerError(f"a program cannot run in a terminal {without}")
    if program.terminal_size is not None:
        if not program.tty:
            raise ValueError("a terminal size is only for a program with tty")
        terminal.check_size(*program.terminal_size)
    run = _Run(
        slot=slot,
        program=program,
        language=language,
        limits=limits,
        workspace=workspace,
        on_output=on_output,
        on_case_output=on_case_output,
        control=control,
        lender=lender,
    )
    return run.result()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Run:
    slot: Slot
    program: Program
    language: Language
    limits: Limits
    workspace: Workspace
    on_output: OnOutput | None
    on_case_output: OnCaseOutput | None
    control: Control | None
    lender: Lender[Any] | None = None

    def result(self) -> Result:
        language, limits, cache = self.language, self.limits, self.workspace.cache
        source = self.program.source.encode("utf-8", errors="surrogatepass")
        compile_output = replayed = ""
        binary: str | None = None
        try:
            if language.is_compiled:
                assert language.version is not None
                key = cache.key(self.program.source, language.version, CXX_FLAGS)
                cached = self._checkout(key)
                if cached is None:
                    # A run of the same source compiling now: wait, and use its binary.
                    with cache.turn(
                        key, wait_s=limits.compile_timeout_s, should_stop=self._is_cancelled
                    ):
                        cached = self._checkout(key)
                        if cached is None:
                            failed, compile_output, binary = self._compile(key, source)
                            if failed is not None:
                                count = len(self.program.cases)
                                return dataclasses.replace(
                                    failed, cases=cases.not_run(count, failed)
                                )
                if cached is not None:
                    binary, compile_output = cached
                    replayed = compile_output  # followers see it as when the compiler ran
            stage = Stage(
                argv=language.run_argv,
                args=self.program.args,
                heap_cap=language.heap_cap,
                source_name=language.source_file,
                source=b"" if language.is_compiled else source,
                binary=binary,
                wall_timeout_s=limits.wall_timeout_s,
                memory_mb=limits.memory_mb,
                max_processes=limits.max_processes,
                file_size_bytes=_RUN_FILE_BYTES,
                limit_address_space=language.limit_address_space,
                tty_init=self.workspace.tty_init if self.program.tty else None,
                # a terminal is made by ttyinit in front of the command: tty runs start cold
                warm=language.warm_start and not self.program.tty,
            )
            preface = (Stream.COMPILE, replayed) if replayed else None
            if self.program.cases:
                return self._run_cases(stage, compile_output, preface)
            return self._execute(
                stage,
                compile_output,
                preface,
                stdin=self.program.stdin,
                interactive=self.program.interactive,
                on_output=self.on_output,
            )
        finally:
            if binary is not None:
                os.unlink(binary)

    def _run_cases(
        self, stage: Stage, compile_output: str, preface: tuple[Stream, str] | None
    ) -> Result:
        """Run each case in a fresh sandbox, in order on this run's slot and side by side on
        the slots the lender spares: a case that fails does not stop the next; a cancel does
        (those left report it without running)."""
        count = len(self.program.cases)
        results: list[Result | None] = [None] * count
        in_order = cases.InOrder(count)
        pending = collections.deque(range(count))
        helpers: list[threading.Thread] = []
        failures: list[BaseException] = []

        def run_case(run: _Run, index: int) -> None:
            case = self.program.cases[index]
            try:
                result = run._execute(
                    dataclasses.replace(stage, args=case.args),
                    "",
                    preface if index == 0 else None,
                    stdin=case.stdin,
                    interactive=False,
                    on_output=in_order.output(index, self._case_output(index)),
                )
                results[index] = cases.with_verdict(result, case.expected_output)
            finally:
                in_order.end(index)

        def run_borrowed(slot: Slot, index: int) -> None:
            try:
                run_case(dataclasses.replace(self, slot=slot), index)
            except BaseException as exc:  # noqa: BLE001 - raised again by the run's thread
                failures.append(exc)
            finally:
                assert self.lender is not None
                self.lender.release(slot)

        try:
            while pending and not failures and not self._is_cancelled():
                index = pending.popleft()
                while pending and self.lender is not None:
                    slot = self.lender.lend()
                    if slot is None:
                        break
                    helper = threading.Thread(
                        target=run_borrowed,
                        args=(slot, pending.popleft()),
                        name=f"{threading.current_thread().name}-case",
                    )
                    helper.start()
                    helpers.append(helper)
                run_case(self, index)
        finally:
            for helper in helpers:
                helper.join()
        if failures:
            raise failures[0]
        cancelled = Result.without_output(ExecutionStatus.CANCELLED, Reason.CANCELLED, "Cancelled")
        done = tuple(result or cases.not_run(1, cancelled)[0] for result in results)
        return cases.summarize(done, compile_output)

    def _checkout(self, key: str) -> tuple[str, str] | None:
        """The cached binary of `key` and its compiler messages, if this run may use them."""
        cached = self.workspace.cache.checkout(key)
        if cached is not None and len(cached[1].encode()) > self.limits.output_limit_bytes:
            os.unlink(cached[0])  # more messages than this run may have: compile anew
            return None
        return cached

    def _is_cancelled(self) -> bool:
        return self.control is not None and self.control.is_cancelled

    def _case_output(self, index: int) -> OnOutput | None:
        """Where the output of case `index` goes: its streams tagged with the case, the
        compiler's (replayed from the cache before the first case) as it is."""
        on_output, on_case_output = self.on_output, self.on_case_output
        if on_case_output is None:
            return on_output

        def emit(stream: Stream, text: str) -> None:
            if stream is not Stream.COMPILE:
                on_case_output(index, stream, text)
            elif on_output is not None:
                on_output(stream, text)

        return emit

    def _compile(self, key: str, source: bytes) -> tuple[Result | None, str, str | None]:
        """Compile; return (None, compiler output, private path of the binary) or a failed
        Result."""
        language, limits = self.language, self.limits
        assert language.compile_argv is not None
        out_dir = tempfile.mkdtemp(dir=self.workspace.scratch_dir, prefix="out-")
        try:
            if self.slot.uid is not None:
                os.chown(out_dir, self.slot.uid, self.slot.uid)
            os.chmod(out_dir, 0o700)
            stage = Stage(
                argv=language.compile_argv,
                source_name=language.source_file,
                source=source,
                out_dir=out_dir,
                wall_timeout_s=limits.compile_timeout_s,
                memory_mb=limits.compile_memory_mb,
                max_processes=max(limits.max_processes, _COMPILE_MIN_PROCESSES),
                file_size_bytes=_COMPILE_FILE_BYTES,
                limit_address_space=True,
            )
            started = time.monotonic()
            # stdout and stderr share one pipe, so the compiler's messages keep their order
            read_fd, write_fd = make_pipe(large=True)
            outcome, report = self._start_and_pump(
                stage,
                {read_fd: Stream.COMPILE},
                write_fd,
                write_fd,
                stdin=None,
                interactive=False,
                on_output=self.on_output,
            )
            wall_ms = int((time.monotonic() - started) * 1000)
            text = outcome.texts[Stream.COMPILE]
            produced = os.path.join(out_dir, "main")
            ok = (
                report.exit_code == 0
                and not (outcome.timed_out or outcome.cancelled or outcome.output_limited)
                and os.path.lexists(produced)
            )
            if ok:
                return None, text, self.workspace.cache.put(key, produced, text)
            if outcome.cancelled:
                status, reason, message = ExecutionStatus.CANCELLED, Reason.CANCELLED, "Cancelled"
            elif outcome.timed_out or report.signal == signal.SIGXCPU:
                status, reason = ExecutionStatus.TIMEOUT, Reason.TIMEOUT
                message = f"Compilation exceeded {limits.compile_timeout_s:g} second timeout"
            elif report.oom_killed:
                status, reason = ExecutionStatus.FAILED, Reason.COMPILE_ERROR
                message = f"Compilation exceeded the {limits.compile_memory_mb} MB memory limit"
            else:
                status, reason, message = (
                    ExecutionStatus.FAILED,
                    Reason.COMPILE_ERROR,
                    "Compilation failed",
                )
            return (
                Result(
                    status=status,
                    reason=reason,
                    exit_code=report.exit_code,
                    signal=report.signal,
                    stdout="",
                    stderr="",
                    compile_output=text,
                    stdout_truncated=False,
                    stderr_truncated=False,
                    wall_time_ms=wall_ms,
                    cpu_time_ms=report.cpu_time_ms,
                    memory_kb=report.memory_kb,
                    message=message,
                ),
                text,
                None,
            )
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)

    def _execute(
        self,
        stage: Stage,
        compile_output: str,
        preface: tuple[Stream, str] | None,
        *,
        stdin: bytes | None,
        interactive: bool,
        on_output: OnOutput | None,
    ) -> Result:
        language, limits = self.language, self.limits
        started = time.monotonic()
        terminal_size: tuple[int, int] | None = None
        if stage.tty_init is not None:
            outcome, report, terminal_size = self._start_in_terminal(
                stage, stdin=stdin, interactive=interactive, on_output=on_output, preface=preface
            )
        else:
            stdout_r, stdout_w = make_pipe(large=True)
            stderr_r, stderr_w = make_pipe(large=True)
            outcome, report = self._start_and_pump(
                stage,
                {stdout_r: Stream.STDOUT, stderr_r: Stream.STDERR},
                stdout_w,
                stderr_w,
                stdin=stdin,
                interactive=interactive,
                on_output=on_output,
                preface=preface,
            )
        wall_ms = int((time.monotonic() - started) * 1000)
        stderr_text = outcome.texts[Stream.STDERR]
        message: str | None = None
        if outcome.cancelled:
            status, reason, message = ExecutionStatus.CANCELLED, Reason.CANCELLED, "Cancelled"
        elif outcome.output_limited:
            status, reason = ExecutionStatus.FAILED, Reason.OUTPUT_LIMIT
            streams = [s.value for s in (Stream.STDOUT, Stream.STDERR) if outcome.truncated[s]]
            message = (
                f"Output exceeded the {limits.output_limit_bytes} byte limit on "
                f"{' and '.join(streams)}"
            )
        elif outcome.timed_out:
            status, reason = ExecutionStatus.TIMEOUT, Reason.TIMEOUT
            message = f"Execution exceeded {limits.wall_timeout_s:g} second timeout"
        elif report.signal == signal.SIGXCPU:
            status, reason = ExecutionStatus.TIMEOUT, Reason.TIMEOUT
            message = f"Execution exceeded {cpu_limit_s(limits.wall_timeout_s)} seconds of CPU time"
        elif report.exit_code != 0 and (
            report.oom_killed
            or any(marker in stderr_text[-_OOM_TAIL_CHARS:] for marker in language.oom_markers)
        ):
            status, reason = ExecutionStatus.FAILED, Reason.MEMORY_LIMIT
            message = f"Memory limit of {limits.memory_mb} MB exceeded"
        elif report.exit_code == 0:
            status, reason = ExecutionStatus.COMPLETED, Reason.EXIT
        else:
            status, reason = ExecutionStatus.FAILED, Reason.RUNTIME_ERROR
        return Result(
            status=status,
            reason=reason,
            exit_code=report.exit_code,
            signal=report.signal,
            stdout=outcome.texts[Stream.STDOUT],
            stderr=stderr_text,
            compile_output=compile_output,
            stdout_truncated=outcome.truncated[Stream.STDOUT],
            stderr_truncated=outcome.truncated[Stream.STDERR],
            wall_time_ms=wall_ms,
            cpu_time_ms=report.cpu_time_ms,
            memory_kb=report.memory_kb,
            message=message,
            terminal_size=terminal_size,
        )

    def _start_and_pump(
        self,
        stage: Stage,
        outputs: dict[int, Stream],
        stdout_w: int,
        stderr_w: int,
        *,
        stdin: bytes | None,
        interactive: bool,
        on_output: OnOutput | None,
        preface: tuple[Stream, str] | None = None,
    ) -> tuple[Outcome, ExitReport]:
        stdin_r: int | None = None
        stdin_w: int | None = None
        try:
            if stdin or interactive:
                stdin_r, stdin_w = make_pipe(large=False)
            else:
                stdin_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            process = self.slot.start(
                stage, stdin_fd=stdin_r, stdout_fd=stdout_w, stderr_fd=stderr_w
            )
        except BaseException:
            for fd in (*outputs, stdin_w):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            # our copies of the child's ends must go, or EOF never comes
            for fd in {stdin_r, stdout_w, stderr_w}:
                if fd is not None:
                    os.close(fd)
        pipes = Pipes(
            outputs=outputs, stdin_fd=stdin_w, stdin_data=stdin or b"", keep_stdin_open=interactive
        )
        return self._pump(process, pipes, stage, on_output, preface)

    def _start_in_terminal(
        self,
        stage: Stage,
        *,
        stdin: bytes | None,
        interactive: bool,
        on_output: OnOutput | None,
        preface: tuple[Stream, str] | None,
    ) -> tuple[Outcome, ExitReport, tuple[int, int] | None]:
        """Start a tty stage: ttyinit gets a socket as stdin, and its (and bwrap's) messages
        go to a pipe read as stderr; the terminal's master it sends back is read as stdout and
        takes the keystrokes. Returns the pump's outcome, the exit report and the terminal's
        size when the program started (None: it never got one). Raises RunnerError when no
        terminal came (after the sandbox has ended), unless the run was cancelled meanwhile."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        errors_r, errors_w = make_pipe(large=False)
        try:
            process = self.slot.start(
                stage, stdin_fd=theirs.fileno(), stdout_fd=errors_w, stderr_fd=errors_w
            )
        except BaseException:
            ours.close()
            os.close(errors_r)
            raise
        finally:
            theirs.close()
            os.close(errors_w)
        # A resize comes after the run was asked for (it names the execution), so it wins.
        resized = self.control.size if self.control is not None else None
        size = (
            resized or self.program.terminal_size or (terminal.DEFAULT_COLS, terminal.DEFAULT_ROWS)
        )
        master = terminal.accept(ours, stage.wall_timeout_s, size)
        outputs = {errors_r: Stream.STDERR}
        keystrokes: int | None = None
        if master is None:
            process.kill()  # the pump collects its messages and its end
        else:
            try:
                keystrokes = os.dup(master)  # registered apart from the master in the pump's poll
            except OSError:
                os.close(master)
                process.kill()
                master = None
            else:
                outputs[master] = Stream.STDOUT
        pipes = Pipes(
            outputs=outputs,
            stdin_fd=keystrokes,
            stdin_data=stdin or b"",
            keep_stdin_open=interactive,
            terminal_fd=master,
        )
        outcome, report = self._pump(process, pipes, stage, on_output, preface)
        if master is None and not outcome.cancelled:
            detail = outcome.texts[Stream.STDERR].strip() or str(report)
            raise RunnerError(f"cannot give the program a terminal: {detail}")
        outcome.texts.setdefault(Stream.STDOUT, "")
        outcome.truncated.setdefault(Stream.STDOUT, False)
        # accept() set `size` before letting the program exec: it is the size the program
        # started with (a resize after that reached it as SIGWINCH).
        return outcome, report, (size if master is not None else None)

    def _pump(
        self,
        process: Process,
        pipes: Pipes,
        stage: Stage,
        on_output: OnOutput | None,
        preface: tuple[Stream, str] | None,
    ) -> tuple[Outcome, ExitReport]:
        outcome = pump(
            process,
            pipes,
            wall_timeout_s=stage.wall_timeout_s,
            output_limit_bytes=self.limits.output_limit_bytes,
            on_output=on_output,
            control=self.control,
            preface=preface,
        )
        if outcome.error is not None:
            raise outcome.error
        report = outcome.report
        assert isinstance(report, ExitReport)
        return outcome, report
