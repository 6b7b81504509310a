"""tty runs: a terminal of the run's own (isatty, prompts, resize, \\r and colours), its limits,
and a program that tries to reach any other terminal."""

from __future__ import annotations

import os
import pathlib
import select
import shutil
import tempfile
import threading

import pytest

from runners import (
    Control,
    ExecutionStatus,
    Limits,
    Program,
    Reason,
    Result,
    Sandbox,
    SandboxConfig,
    Stream,
)
from tests.runners.conftest import (
    FAST,
    LANGUAGES,
    Chunks,
    assert_nothing_left,
    program,
    requires_bwrap,
)
from tests.utils import TIMEOUT

pytestmark = requires_bwrap

IS_A_TTY = {
    "python": "import os\nprint([os.isatty(fd) for fd in (0, 1, 2)], os.environ['TERM'])",
    "javascript": "console.log(JSON.stringify([process.stdin.isTTY, process.stdout.isTTY,"
    " process.stderr.isTTY]), process.env.TERM)",
    "c++": "#include <cstdio>\n#include <cstdlib>\n#include <unistd.h>\n"
    'int main() { printf("[%d, %d, %d] %s\\n", isatty(0), isatty(1), isatty(2),'
    ' getenv("TERM")); }',
}
EXPECTED_IS_A_TTY = {
    "python": "[True, True, True] xterm-256color\r\n",
    "javascript": "[true,true,true] xterm-256color\r\n",
    "c++": "[1, 1, 1] xterm-256color\r\n",
}
PROMPT = {
    "python": "name = input('name? ')\nprint(f'hello, {name}')",
    "javascript": "const rl = require('readline').createInterface("
    "{input: process.stdin, output: process.stdout});\n"
    "rl.question('name? ', (name) => { console.log(`hello, ${name}`); rl.close(); });",
    "c++": "#include <iostream>\n#include <string>\nint main() { std::string name;\n"
    '  std::cout << "name? " << std::flush; std::getline(std::cin, name);\n'
    '  std::cout << "hello, " << name << std::endl; }',
}
RESIZE = """
import os, signal
# blocked, then waited for: a handler could miss one that came before input() blocked
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})
print(tuple(os.get_terminal_size()), flush=True)
signal.sigwait({signal.SIGWINCH})
print("SIGWINCH", tuple(os.get_terminal_size()), flush=True)
"""


def run_tty(
    sandbox: Sandbox,
    prog: Program,
    limits: Limits = FAST,
    control: Control | None = None,
    chunks: Chunks | None = None,
) -> Result:
    """Run in a terminal and check its contract: one stream, joined chunks = stdout."""
    chunks = chunks if chunks is not None else Chunks()
    result = sandbox.run(prog, limits, on_output=chunks, control=control)
    assert chunks.text(Stream.STDOUT) == result.stdout
    assert chunks.text(Stream.STDERR) == result.stderr == ""
    assert all(text for _stream, text in chunks.calls)
    assert_nothing_left(sandbox)
    return result


@pytest.mark.parametrize("language", LANGUAGES)
def test_stdin_stdout_and_stderr_are_a_terminal(sandbox: Sandbox, language: str) -> None:
    """In each language, stdin, stdout and stderr of a tty run are a terminal, TERM is set."""
    result = run_tty(sandbox, Program(language, IS_A_TTY[language], tty=True))
    assert result.status is ExecutionStatus.COMPLETED, result
    assert result.stdout == EXPECTED_IS_A_TTY[language]


def test_without_tty_nothing_is_a_terminal(sandbox: Sandbox) -> None:
    """A run without tty has pipes, as before, no TERM, and its Result no terminal size."""
    source = "import os\nprint([os.isatty(fd) for fd in (0, 1, 2)], os.environ.get('TERM'))"
    result = sandbox.run(Program("python", source), FAST)
    assert result.stdout == "[False, False, False] None\n"
    assert result.terminal_size is None


def test_stderr_is_the_same_terminal_in_order(sandbox: Sandbox) -> None:
    """What goes to stderr arrives on the one stream, in the order it was written."""
    source = "import sys\nprint('out 1')\nprint('err', file=sys.stderr)\nprint('out 2')"
    result = run_tty(sandbox, Program("python", source, tty=True))
    assert result.stdout == "out 1\r\nerr\r\nout 2\r\n"


def test_progress_bar_and_colours_arrive_byte_for_byte(sandbox: Sandbox) -> None:
    """\\r progress bars, ANSI colours and multi-byte characters arrive intact, chunk by chunk."""
    source = (
        "import sys, time\n"
        "for i in range(0, 101, 10):\n"
        "    sys.stdout.write(f'\\r[{\"█\" * (i // 10):<10}] {i}%')\n"
        "    sys.stdout.flush()\n"
        "    time.sleep(0.01)\n"
        "print('\\n\\x1b[32mdone ✓\\x1b[0m')\n"
    )
    chunks = Chunks()
    result = run_tty(sandbox, Program("python", source, tty=True), chunks=chunks)
    bar = "".join(f"\r[{'█' * (i // 10):<10}] {i}%" for i in range(0, 101, 10))
    assert result.stdout == bar + "\r\n\x1b[32mdone ✓\x1b[0m\r\n"
    assert len(chunks.calls) > 2  # streamed as drawn, not at the end


def test_a_character_split_across_writes_arrives_whole(sandbox: Sandbox) -> None:
    """Through the terminal too, a character cut between two writes is never cut between two
    chunks, and bytes that are not UTF-8 arrive as U+FFFD."""
    chunks = Chunks()
    result = run_tty(sandbox, program("utf8_split", "python", tty=True), chunks=chunks)
    assert result.stdout == "a€\r\nbad \ufffd\ufffd end\r\n\ufffd"
    assert "a" in [text for _stream, text in chunks.calls]  # the chunk before the split char
    assert all(not text.startswith("\u20ac") or text.startswith("€\r\n") for _s, text in
               chunks.calls)  # fmt: skip


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_prompt_is_answered_over_stdin(sandbox: Sandbox, language: str) -> None:
    """The prompt appears without a newline; the answer typed in is echoed and read."""
    control = Control()
    chunks = Chunks()

    def answer(stream: Stream, text: str) -> None:
        chunks(stream, text)
        if "name? " in chunks.text(Stream.STDOUT) and "ada" not in chunks.text(Stream.STDOUT):
            control.write(b"ada\n")

    limits = Limits(wall_timeout_s=10)
    result = sandbox.run(Program(language, PROMPT[language], tty=True, interactive=True), limits,
                         on_output=answer, control=control)  # fmt: skip
    assert result.status is ExecutionStatus.COMPLETED, result
    assert chunks.text(Stream.STDOUT) == result.stdout
    if language == "javascript":  # readline draws the line itself: raw mode, cursor moves
        assert "name? \x1b[7Gada" in result.stdout and result.stdout.endswith("hello, ada\r\n")
    else:  # the terminal echoes what is typed, and turns "\n" into "\r\n" on output
        assert result.stdout == "name? ada\r\nhello, ada\r\n"


def test_end_of_input_is_ctrl_d(sandbox: Sandbox) -> None:
    """close_stdin() types Ctrl-D: a program reading to the end of input gets what was typed,
    even after a partial line."""
    source = "import sys\ndata = sys.stdin.read()\nprint(repr(data))"
    control = Control()
    control.write(b"one\ntwo")
    control.close_stdin()
    prog = Program("python", source, tty=True, interactive=True)
    result = run_tty(sandbox, prog, control=control)
    assert result.status is ExecutionStatus.COMPLETED, result
    assert result.stdout.endswith("'one\\ntwo'\r\n")


def test_stdin_given_at_the_start_is_typed_then_ended(sandbox: Sandbox) -> None:
    """A tty run that is not interactive gets its stdin typed in, then the end of input."""
    source = "import sys\nprint(repr(sys.stdin.read()))"
    result = run_tty(sandbox, Program("python", source, stdin=b"a\nb\n", tty=True))
    assert result.stdout == "a\r\nb\r\n'a\\nb\\n'\r\n"


def test_the_default_size_is_80_by_24(sandbox: Sandbox) -> None:
    """A terminal nobody resized is 80 columns by 24 rows, and its Result says so."""
    source = "import os\nprint(tuple(os.get_terminal_size()))"
    result = run_tty(sandbox, Program("python", source, tty=True))
    assert (result.stdout, result.terminal_size) == ("(80, 24)\r\n", (80, 24))


def test_a_size_asked_before_the_start_is_the_size_at_the_start(sandbox: Sandbox) -> None:
    """A resize sent before the program starts is the size it reads first (no SIGWINCH race),
    and the size its Result says it started with."""
    control = Control()
    control.resize(132, 43)
    source = "import os\nprint(tuple(os.get_terminal_size()))"
    result = run_tty(sandbox, Program("python", source, tty=True), control=control)
    assert (result.stdout, result.terminal_size) == ("(132, 43)\r\n", (132, 43))


def test_the_programs_terminal_size_is_the_size_at_the_start(sandbox: Sandbox) -> None:
    """A program given a terminal size reads it first, with no resize needed; its Result says
    it started with it."""
    source = "import os\nprint(tuple(os.get_terminal_size()))"
    result = run_tty(sandbox, Program("python", source, tty=True, terminal_size=(132, 43)))
    assert (result.stdout, result.terminal_size) == ("(132, 43)\r\n", (132, 43))


def test_a_resize_before_the_start_wins_over_the_programs_size(sandbox: Sandbox) -> None:
    """A resize is asked after the run was: before the start, it replaces the run's size, in
    what the program reads and in what its Result says it started with."""
    control = Control()
    control.resize(100, 30)
    source = "import os\nprint(tuple(os.get_terminal_size()))"
    prog = Program("python", source, tty=True, terminal_size=(132, 43))
    result = run_tty(sandbox, prog, control=control)
    assert (result.stdout, result.terminal_size) == ("(100, 30)\r\n", (100, 30))


@pytest.mark.parametrize(
    "prog",
    [
        Program("python", "pass", tty=True, terminal_size=(1001, 24)),
        Program("python", "pass", tty=True, terminal_size=(80, 0)),
        Program("python", "pass", terminal_size=(80, 24)),
    ],
    ids=["too-wide", "no-rows", "without-tty"],
)
def test_a_terminal_size_out_of_bounds_or_without_tty_is_refused(
    sandbox: Sandbox, prog: Program
) -> None:
    """A size outside 1..1000, or for a program without a terminal, runs nothing."""
    with pytest.raises(ValueError, match="terminal"):
        sandbox.run(prog, FAST)
    assert_nothing_left(sandbox)


def test_resize_reaches_the_program(sandbox: Sandbox) -> None:
    """A resize while the program runs sends it SIGWINCH, and it reads the new size; its
    Result still says the size it started with."""
    control = Control()
    chunks = Chunks()

    def resize_once_started(stream: Stream, text: str) -> None:
        chunks(stream, text)  # python -u may write a line and its newline apart
        if chunks.text(Stream.STDOUT) == "(80, 24)\r\n":
            control.resize(100, 30)

    prog = Program("python", RESIZE, tty=True)
    result = sandbox.run(prog, Limits(wall_timeout_s=10), on_output=resize_once_started,
                         control=control)  # fmt: skip
    assert result.status is ExecutionStatus.COMPLETED, result
    assert result.stdout == "(80, 24)\r\nSIGWINCH (100, 30)\r\n"
    assert result.terminal_size == (80, 24)


def test_a_tty_program_that_never_started_has_no_terminal_size(sandbox: Sandbox) -> None:
    """A tty run that fails to compile, or is cancelled before it starts, never had a terminal:
    its Result has no terminal size."""
    broken = Program("c++", "int main( {", tty=True, terminal_size=(100, 30))
    failed = sandbox.run(broken, FAST)
    assert (failed.reason, failed.terminal_size) == (Reason.COMPILE_ERROR, None), failed
    control = Control()
    control.resize(120, 40)
    control.cancel()
    cancelled = sandbox.run(Program("python", "print(1)", tty=True), FAST, control=control)
    assert (cancelled.reason, cancelled.terminal_size) == (Reason.CANCELLED, None), cancelled


def test_resize_out_of_bounds_is_refused() -> None:
    """Sizes outside 1..1000 are refused before they reach any terminal."""
    for cols, rows in ((0, 24), (80, 0), (1001, 24), (80, 1001)):
        with pytest.raises(ValueError, match="terminal"):
            Control().resize(cols, rows)


def test_ttyinit_becomes_the_program(sandbox: Sandbox) -> None:
    """No process stays in front of the program: it is pid 2, beside bwrap's pid 1 only."""
    source = "import os\nprint(os.getpid(), sorted(int(p) for p in os.listdir('/proc') "
    source += "if p.isdigit()))"
    result = run_tty(sandbox, Program("python", source, tty=True))
    assert result.stdout == "2 [1, 2]\r\n"


def test_the_wall_time_limit_holds(sandbox: Sandbox) -> None:
    """An endless loop in a terminal times out at its wall time."""
    limits = Limits(wall_timeout_s=1.5)
    result = run_tty(sandbox, program("infinite_loop", "python", tty=True), limits)
    assert (result.status, result.reason) == (ExecutionStatus.TIMEOUT, Reason.TIMEOUT)
    assert result.wall_time_ms < 1500 + 5000


def test_the_output_limit_holds(sandbox: Sandbox) -> None:
    """A flood in a terminal stops at the output limit, keeping exactly the first bytes."""
    limits = Limits(wall_timeout_s=10, output_limit_bytes=5000)
    result = run_tty(sandbox, program("flood", "python", tty=True), limits)
    assert (result.status, result.reason) == (ExecutionStatus.FAILED, Reason.OUTPUT_LIMIT)
    assert result.stdout_truncated and len(result.stdout.encode()) <= 5000
    assert result.stdout.startswith("line 0 ✓\r\nline 1 ✓\r\n")


def test_the_memory_limit_holds(sandbox: Sandbox) -> None:
    """Allocating without end in a terminal fails at the memory limit."""
    limits = Limits(wall_timeout_s=10, memory_mb=128)
    result = run_tty(sandbox, program("memory_bomb", "python", tty=True), limits)
    assert (result.status, result.reason) == (ExecutionStatus.FAILED, Reason.MEMORY_LIMIT), result


def test_the_process_limit_holds(sandbox: Sandbox) -> None:
    """Starting processes without end in a terminal stops at the process limit."""
    limits = Limits(wall_timeout_s=5, max_processes=8)
    result = run_tty(sandbox, program("processes", "python", tty=True), limits)
    assert (result.status, result.reason) == (ExecutionStatus.FAILED, Reason.RUNTIME_ERROR)
    assert int(result.stdout.split("stopped after ")[1].split()[0]) < 8


def test_cancel_ends_a_tty_run(sandbox: Sandbox) -> None:
    """A cancelled tty run waiting for input ends CANCELLED at once."""
    control = Control()
    chunks = Chunks()

    def cancel_at_prompt(stream: Stream, text: str) -> None:
        chunks(stream, text)
        if "? " in text:
            control.cancel()

    prog = Program("python", "input('? ')", tty=True, interactive=True)
    result = sandbox.run(prog, Limits(wall_timeout_s=20), on_output=cancel_at_prompt,
                         control=control)  # fmt: skip
    assert result.status is ExecutionStatus.CANCELLED, result
    assert result.wall_time_ms < 10_000


def test_the_terminal_is_gone_after_the_run(sandbox: Sandbox) -> None:
    """Once the run has ended, this process holds no terminal of it: no fd is left open."""
    before = set(os.listdir("/proc/self/fd"))
    run_tty(sandbox, Program("python", "print('x')", tty=True))
    after = set(os.listdir("/proc/self/fd"))
    leaked = [os.readlink(f"/proc/self/fd/{fd}") for fd in after - before if _exists(fd)]
    assert not [path for path in leaked if "pts" in path or "ptmx" in path], leaked


def test_a_program_reaches_no_terminal_but_its_own(sandbox: Sandbox) -> None:
    """Hostile: the host's terminals and another run's are out of reach. /dev/pts holds only
    the run's own terminal, /dev/console does not exist, what the program types into every
    terminal it can open reaches neither a host terminal nor a run beside it, and TIOCSTI is
    refused."""
    host_master, host_slave = os.openpty()  # a host terminal, as a logged-in user's
    try:
        neighbour_started = threading.Event()
        results: dict[str, Result] = {}

        def neighbour() -> None:  # a tty run in the other slot, waiting on its input
            control = Control()

            def started(stream: Stream, text: str) -> None:
                if "ready" in text:
                    neighbour_started.set()

            prog = Program("python", "print('ready')\nimport time\ntime.sleep(3)", tty=True)
            results["neighbour"] = sandbox.run(prog, Limits(wall_timeout_s=20),
                                               on_output=started, control=control)  # fmt: skip

        thread = threading.Thread(target=neighbour)
        thread.start()
        assert neighbour_started.wait(TIMEOUT)
        escape = program("tty_escape", "python", tty=True, args=("MARKER-7f3a",))
        result = sandbox.run(escape, Limits(wall_timeout_s=10))
        thread.join()
        assert_nothing_left(sandbox)
        lines = result.stdout.replace("\r\n", "\n").splitlines()
        assert lines[0] == "pts ['0', 'ptmx']", lines
        assert "/dev/console ENOENT" in lines
        assert {"/dev/tty0 ENOENT", "/dev/tty1 ENOENT"} <= set(lines)
        opened = [line for line in lines if " opened" in line]
        assert sorted(line.split()[0] for line in opened) == [
            "/dev/ptmx",
            "/dev/pts/0",
            "/dev/pts/ptmx",
            "/dev/tty",
        ]
        assert "/dev/pts/0 opened own" in lines and "TIOCSTI EPERM" in lines
        # what it typed went to its own terminal only
        assert "MARKER-7f3a" in result.stdout
        assert "MARKER-7f3a" not in results["neighbour"].stdout
        assert results["neighbour"].stdout == "ready\r\n"
        assert not select.select([host_master], [], [], 0.2)[0]  # the host terminal got nothing
    finally:
        os.close(host_master)
        os.close(host_slave)


_TYPE_WITH_HIGH_BITS = """
import ctypes, errno, termios
attrs = termios.tcgetattr(0)
attrs[3] &= ~termios.ECHO  # what is typed shows only in what this prints
termios.tcsetattr(0, termios.TCSANOW, attrs)
libc = ctypes.CDLL(None, use_errno=True)
char = ctypes.c_char(b"x")
for request in (0x5412, 0x1_0000_5412, 0xFFFF_FFFF_0000_5412):  # TIOCSTI, then high bits set
    answer = libc.syscall(16, 0, ctypes.c_ulong(request), ctypes.byref(char))
    print(hex(request), "typed" if answer == 0 else errno.errorcode[ctypes.get_errno()])
"""


def test_typing_into_the_terminal_is_refused_however_the_request_is_written(
    sandbox: Sandbox,
) -> None:
    """TIOCSTI is refused whatever the request's upper 32 bits, which the kernel ignores."""
    result = sandbox.run(Program("python", _TYPE_WITH_HIGH_BITS, tty=True), FAST)
    assert_nothing_left(sandbox)
    assert result.stdout.replace("\r\n", "\n").splitlines() == [
        "0x5412 EPERM",
        "0x100005412 EPERM",
        "0xffffffff00005412 EPERM",
    ], result


def test_a_run_without_tty_has_no_terminal_at_all(sandbox: Sandbox) -> None:
    """Hostile, without tty: no terminal can be opened; /dev/tty names none."""
    result = sandbox.run(program("tty_escape", "python"), Limits(wall_timeout_s=10))
    lines = result.stdout.splitlines()
    assert not [line for line in lines if " opened" in line and "ptmx" not in line], lines
    assert "/dev/console ENOENT" in lines
    assert "MARKER" not in result.stdout and "ESCAPED" not in result.stdout


def _exists(fd: str) -> bool:
    return pathlib.Path(f"/proc/self/fd/{fd}").exists()


def test_unsandboxed_mode_gives_a_terminal_too() -> None:
    """Mode "none" (development, no isolation at all) runs tty programs in a terminal too."""
    work_root = tempfile.mkdtemp(dir="/var/tmp", prefix="livecode-test-")
    try:
        with Sandbox(SandboxConfig(mode="none", slots=1, work_root=work_root)) as bare:
            result = bare.run(Program("python", IS_A_TTY["python"], tty=True), FAST)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    assert result.stdout == EXPECTED_IS_A_TTY["python"], result


def test_ctrl_c_interrupts_the_program(sandbox: Sandbox) -> None:
    """Ctrl-C typed into the terminal interrupts the program (SIGINT), as in a terminal."""
    control = Control()
    chunks = Chunks()

    def interrupt_when_waiting(stream: Stream, text: str) -> None:
        chunks(stream, text)
        if chunks.text(Stream.STDOUT) == "waiting\r\n":
            control.write(b"\x03")

    # a loop, not input(): a signal that comes before input() blocks waits for it to return
    source = "import time\ntry:\n    print('waiting')\n    while True:\n        time.sleep(0.05)\n"
    source += "except KeyboardInterrupt:\n    print('interrupted')"
    prog = Program("python", source, tty=True, interactive=True)
    result = sandbox.run(prog, Limits(wall_timeout_s=10), on_output=interrupt_when_waiting,
                         control=control)  # fmt: skip
    assert result.status is ExecutionStatus.COMPLETED, result
    assert result.stdout == "waiting\r\n^Cinterrupted\r\n"  # the terminal echoes ^C
