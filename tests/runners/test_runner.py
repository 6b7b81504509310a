"""Runs in each language: hello, stdin, args, unicode, errors, limits, streaming, control, cache."""

from __future__ import annotations

import collections
import os
import pathlib
import threading
import time
import uuid

import pytest

from runners import (
    Control,
    ExecutionStatus,
    Limits,
    Program,
    Reason,
    Result,
    Sandbox,
    Stream,
)
from runners.cache import BinaryCache
from runners.languages import CXX_FLAGS, resolve_language
from tests.runners.conftest import (
    FAST,
    LANGUAGES,
    assert_nothing_left,
    program,
    requires_bwrap,
    run,
)
from tests.utils import TIMEOUT

pytestmark = requires_bwrap

HELLO = {
    "python": "print('hello, world')",
    "javascript": "console.log('hello, world')",
    "c++": '#include <iostream>\nint main() { std::cout << "hello, world" << std::endl; }',
}
ECHO = {
    "python": "import sys\nprint(sys.stdin.read().upper(), *sys.argv[1:])",
    "javascript": "const s = require('fs').readFileSync(0, 'utf8');\n"
    "console.log(s.toUpperCase(), ...process.argv.slice(2))",
    "c++": "#include <bits/stdc++.h>\nint main(int argc, char** argv) {\n"
    "  std::string s, l; while (std::getline(std::cin, l)) s += l + '\\n';\n"
    "  for (auto& c : s) c = toupper(c); std::cout << s;\n"
    "  for (int i = 1; i < argc; i++) std::cout << ' ' << argv[i]; std::cout << '\\n'; }",
}
CRASH = {
    "python": "raise SystemExit(3)",
    "javascript": "process.exit(3)",
    "c++": "int main() { return 3; }",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_hello_world(sandbox: Sandbox, language: str) -> None:
    """Hello world in each language completes with exit code 0, its output, time and memory."""
    result, _ = run(sandbox, Program(language, HELLO[language]))
    assert (result.status, result.reason, result.exit_code) == (
        ExecutionStatus.COMPLETED,
        Reason.EXIT,
        0,
    )
    assert result.stdout == "hello, world\n"
    assert result.stderr == ""
    assert result.wall_time_ms >= 0 and result.cpu_time_ms is not None
    assert result.memory_kb and result.memory_kb > 0


@pytest.mark.parametrize("language", LANGUAGES)
def test_stdin_and_args(sandbox: Sandbox, language: str) -> None:
    """A program reads the stdin and the arguments it was given, in each language."""
    prog = Program(language, ECHO[language], stdin=b"abc\n", args=("x y", "é"))
    result, _ = run(sandbox, prog)
    assert result.status is ExecutionStatus.COMPLETED, result
    assert result.stdout.startswith("ABC\n")
    assert result.stdout.rstrip().endswith("x y é")


@pytest.mark.parametrize("language", LANGUAGES)
def test_args_reach_the_program_verbatim(sandbox: Sandbox, language: str) -> None:
    """Arguments that look like our argv templates are passed as they are, not filled in."""
    args = ("{source}", "{", "{heap_cap}", "")
    result, _ = run(sandbox, Program(language, ECHO[language], stdin=b"", args=args))
    assert result.status is ExecutionStatus.COMPLETED, result
    assert result.stdout.rstrip("\n").endswith(" {source} { {heap_cap} ")


@pytest.mark.parametrize("language", LANGUAGES)
def test_nonzero_exit_is_a_runtime_error(sandbox: Sandbox, language: str) -> None:
    """A program exiting with 3 fails as a runtime error with exit code 3."""
    result, _ = run(sandbox, Program(language, CRASH[language]))
    assert (result.status, result.reason, result.exit_code) == (
        ExecutionStatus.FAILED,
        Reason.RUNTIME_ERROR,
        3,
    )


def test_uncaught_exception_is_a_runtime_error_with_traceback(sandbox: Sandbox) -> None:
    """An uncaught Python exception fails as a runtime error, its traceback in stderr."""
    result, _ = run(sandbox, Program("python", "def f():\n    1/0\nf()"))
    assert (result.status, result.reason, result.exit_code) == (
        ExecutionStatus.FAILED,
        Reason.RUNTIME_ERROR,
        1,
    )
    assert "ZeroDivisionError" in result.stderr


def test_cpp_abort_reports_the_signal(sandbox: Sandbox) -> None:
    """A C++ program that aborts fails as a runtime error with signal 6."""
    result, _ = run(sandbox, Program("c++", "#include <cstdlib>\nint main() { std::abort(); }"))
    assert (result.status, result.reason, result.signal) == (
        ExecutionStatus.FAILED,
        Reason.RUNTIME_ERROR,
        6,
    )


def test_compile_error_streams_the_compiler_message(sandbox: Sandbox) -> None:
    """A C++ compile error fails the run, the compiler's message streamed as it comes."""
    source = f"// {uuid.uuid4()}\nint main() {{ return undefined_name; }}"
    result, chunks = run(sandbox, Program("c++", source))
    assert (result.status, result.reason) == (ExecutionStatus.FAILED, Reason.COMPILE_ERROR)
    assert "undefined_name" in result.compile_output and "error" in result.compile_output
    assert any(stream is Stream.COMPILE for stream, _ in chunks.calls)
    assert result.stdout == ""


def test_unicode_is_decoded_without_splitting_characters(sandbox: Sandbox) -> None:
    """Output cut mid-character arrives whole, and bytes that are not UTF-8 as U+FFFD."""
    result, chunks = run(sandbox, program("utf8_split", "python"))
    assert result.stdout == "a€\nbad \ufffd\ufffd end\n\ufffd"
    for _stream, text in chunks.calls:
        assert not text.startswith("\u20ac") or text.startswith("€\n")  # "€" arrived whole
    assert "a" in [text for _s, text in chunks.calls]  # the chunk before the split char


def test_cache_hit_skips_the_compiler_and_repeats_its_messages(sandbox: Sandbox) -> None:
    """Running the same C++ source again skips the compiler and still shows its warnings."""
    source = f'#include <cstdio>\n#warning "compiled {uuid.uuid4()}"\nint main() {{ puts("a"); }}'
    first, _ = run(sandbox, Program("c++", source))
    assert first.stdout == "a\n" and "compiled" in first.compile_output  # the compiler warned
    # Swap the cached binary for another program's: what the next run prints tells which ran.
    other = '#include <cstdio>\nint main() { puts("from the cache"); }'
    assert run(sandbox, Program("c++", other))[0].stdout == "from the cache\n"
    version = resolve_language("c++").version
    assert version is not None
    cached = os.path.join(sandbox.cache.directory, sandbox.cache.key(source, version, CXX_FLAGS))
    os.replace(
        os.path.join(sandbox.cache.directory, sandbox.cache.key(other, version, CXX_FLAGS)), cached
    )
    seen: list[tuple[str, str]] = []
    control = Control()
    control.on_start(lambda: seen.append(("start", "")))
    second = sandbox.run(
        Program("c++", source),
        FAST,
        on_output=lambda stream, text: seen.append((str(stream), text)),
        control=control,
    )
    assert (second.status, second.stdout) == (ExecutionStatus.COMPLETED, "from the cache\n")
    # The same warnings, as a user re-running the same source expects, in the result and in
    # the stream: after the start (a follower's RUNNING), before the program's own output.
    assert second.compile_output == first.compile_output
    assert seen == [
        ("start", ""),
        ("compile", first.compile_output),
        ("stdout", "from the cache\n"),
    ]


def test_runs_of_one_source_at_once_both_get_its_binary_and_messages(sandbox: Sandbox) -> None:
    """Two runs of a source never compiled, started together (one compiles, the other waits
    for that compile), both run it and both show the compiler's warning."""
    source = (
        f'// {uuid.uuid4()}\n#warning "made once"\n#include <cstdio>\nint main() {{ puts("ran"); }}'
    )
    results: list[Result] = []
    runs = [
        threading.Thread(target=lambda: results.append(sandbox.run(Program("c++", source), FAST)))
        for _ in range(2)
    ]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()
    assert_nothing_left(sandbox)
    assert [(result.status, result.stdout) for result in results] == [
        (ExecutionStatus.COMPLETED, "ran\n")
    ] * 2
    assert "made once" in results[0].compile_output
    assert results[0].compile_output == results[1].compile_output


def test_a_compile_waits_for_one_of_the_same_source_under_way(tmp_path: pathlib.Path) -> None:
    """While one compile of a source holds its turn, another of the same source waits (it is
    asked whether to give up, and answers no), then finds the first one's binary cached."""
    cache = BinaryCache(str(tmp_path / "cache"), 1 << 20)
    binary = tmp_path / "main"
    binary.write_bytes(b"\x7fELF a binary")
    first_in, second_waits = threading.Event(), threading.Event()
    found: list[tuple[str, str] | None] = []

    def second() -> None:
        first_in.wait(TIMEOUT)

        def still_waiting() -> bool:
            second_waits.set()
            return False

        with cache.turn("k", wait_s=TIMEOUT, should_stop=still_waiting):
            found.append(cache.checkout("k"))

    other = threading.Thread(target=second)
    other.start()
    with cache.turn("k", wait_s=TIMEOUT, should_stop=lambda: False):
        first_in.set()
        assert second_waits.wait(TIMEOUT)
        os.unlink(cache.put("k", str(binary), "a warning"))
    other.join(TIMEOUT)
    (checked_out,) = found
    assert checked_out is not None and checked_out[1] == "a warning"
    os.unlink(checked_out[0])


@pytest.mark.parametrize("language", LANGUAGES)
def test_output_streams_line_by_line_without_flushing(sandbox: Sandbox, language: str) -> None:
    """Lines a program prints without flushing arrive one by one, as they are printed."""
    arrivals: list[tuple[float, str]] = []

    def on_output(stream: Stream, text: str) -> None:
        if stream is Stream.STDOUT:
            arrivals.append((time.monotonic(), text))

    result = sandbox.run(program("stream_lines", language), FAST, on_output=on_output)
    assert result.status is ExecutionStatus.COMPLETED, result
    # python -u writes a line and its newline apart: under load they may be two chunks. A
    # line arrives when the chunk that ends it does.
    lines: list[tuple[float, str]] = []
    pending = ""
    for arrived, text in arrivals:
        pending += text
        while "\n" in pending:
            line, pending = pending.split("\n", 1)
            lines.append((arrived, line + "\n"))
    assert [text for _t, text in lines] == [f"tick {i}\n" for i in range(4)] and not pending
    gaps = [b[0] - a[0] for a, b in zip(lines, lines[1:], strict=False)]
    assert all(gap > 0.15 for gap in gaps), gaps


def test_interactive_stdin_write_then_eof(sandbox: Sandbox) -> None:
    """An interactive program reads input typed while it runs, then the end of input."""
    control = Control()
    seen: list[str] = []

    def on_output(stream: Stream, text: str) -> None:
        seen.append(text)
        # 'ready' and its newline may come as two chunks (python writes them apart).
        if "".join(seen) == "ready\n":
            threading.Thread(
                target=lambda: (control.write(b"hello\n"), control.close_stdin())
            ).start()

    prog = program("echo_upper", "python", interactive=True)
    result = sandbox.run(prog, FAST, on_output=on_output, control=control)
    assert result.status is ExecutionStatus.COMPLETED, result
    assert result.stdout == "ready\nHELLO\neof\n"


def test_stdin_typed_while_compiling_reaches_the_program(sandbox: Sandbox) -> None:
    """Input written to an interactive C++ run before its compiler is done is read by the
    program once it starts, not swallowed by the compile stage."""
    control = Control()
    control.write(b"41\n")
    control.close_stdin()
    source = (
        "#include <iostream>\nint main() { int n; std::cin >> n; std::cout << n + 1 << '\\n'; }"
    )
    result = sandbox.run(
        Program("c++", source + f"// {uuid.uuid4()}", interactive=True),  # no cache hit
        FAST,
        control=control,
    )
    assert result.status is ExecutionStatus.COMPLETED, result
    assert result.stdout == "42\n"


def test_cancel_mid_run(sandbox: Sandbox) -> None:
    """Cancelling a running program ends it within seconds as cancelled, its output kept."""
    control = Control()

    def on_output(stream: Stream, text: str) -> None:
        threading.Timer(0.1, control.cancel).start()

    started = time.monotonic()
    prog = Program("python", "import time\nprint('started')\ntime.sleep(60)")
    result = sandbox.run(prog, Limits(wall_timeout_s=30), on_output=on_output, control=control)
    assert (result.status, result.reason) == (ExecutionStatus.CANCELLED, Reason.CANCELLED)
    assert result.stdout == "started\n"
    assert time.monotonic() - started < 5


def test_cancel_before_start_returns_at_once(sandbox: Sandbox) -> None:
    """A run cancelled before it starts ends as cancelled without starting."""
    control = Control()
    control.cancel()
    started: list[bool] = []
    control.on_start(lambda: started.append(True))
    result = sandbox.run(Program("python", "print(1)"), FAST, control=control)
    assert result.status is ExecutionStatus.CANCELLED
    assert started == []  # it never started


@pytest.mark.parametrize(
    ("language", "source"),
    [
        ("python", "print('out')"),
        # a compile stage and a run stage: one start, before the compiler's message
        ("c++", '#warning "careful"\n#include <cstdio>\nint main() { puts("out"); }'),
    ],
)
def test_on_start_comes_once_before_any_output(
    sandbox: Sandbox, language: str, source: str
) -> None:
    """A run is announced started once, before any output or compiler message."""
    control = Control()
    happened: list[str] = []
    control.on_start(lambda: happened.append("start"))
    result = sandbox.run(
        Program(language, source),
        FAST,
        on_output=lambda stream, text: happened.append(str(stream)),
        control=control,
    )
    assert result.status is ExecutionStatus.COMPLETED, result
    assert happened[0] == "start" and happened.count("start") == 1
    assert "stdout" in happened
    if language == "c++":
        assert "compile" in happened


def test_exception_in_on_output_kills_the_run_and_propagates(sandbox: Sandbox) -> None:
    """A consumer failing on output kills the run, raises its error, and the slot works on."""

    def on_output(stream: Stream, text: str) -> None:
        raise KeyError("consumer broke")

    with pytest.raises(KeyError):
        sandbox.run(Program("python", "import time\nprint(1)\ntime.sleep(60)"), FAST, on_output)
    run(sandbox, Program("python", "print(2)"))  # nothing left behind, the slot works


def test_exception_in_on_start_kills_the_run_and_propagates(sandbox: Sandbox) -> None:
    """Like a failing on_output: the run is killed, every pipe closed, the error raised."""

    def on_start() -> None:
        raise KeyError("announcer broke")

    run(sandbox, Program("python", "print(1)"))  # whatever a first run opens for good
    open_fds = len(os.listdir("/proc/self/fd"))
    started = time.monotonic()
    for _ in range(3):
        control = Control()
        control.on_start(on_start)
        with pytest.raises(KeyError):
            sandbox.run(Program("python", "import time\ntime.sleep(60)"), FAST, control=control)
    assert time.monotonic() - started < 30
    assert len(os.listdir("/proc/self/fd")) == open_fds
    run(sandbox, Program("python", "print(2)"))  # nothing left behind, the slot works


def test_runs_in_threads_that_end_leave_no_fd_open(sandbox: Sandbox) -> None:
    """A run's thread may end after it (a test case's helper thread): what the run kept for
    its thread (its pump's wake-up fd) goes with the thread."""
    run(sandbox, Program("python", "print(1)"))  # whatever a first run opens for good
    open_fds = len(os.listdir("/proc/self/fd"))
    results: list[Result] = []
    for _ in range(3):
        thread = threading.Thread(
            target=lambda: results.append(sandbox.run(Program("python", "print(2)"), FAST))
        )
        thread.start()
        thread.join(TIMEOUT)
    assert [result.stdout for result in results] == ["2\n"] * 3
    assert len(os.listdir("/proc/self/fd")) == open_fds


@pytest.mark.parametrize("language", LANGUAGES)
def test_output_limit_keeps_exactly_the_first_bytes(sandbox: Sandbox, language: str) -> None:
    """A program flooding stdout fails at the output limit, keeping exactly its first bytes."""
    result, _ = run(sandbox, program("flood", language))
    expected = "".join(f"line {i} ✓\n" for i in range(5000)).encode()[: FAST.output_limit_bytes]
    assert (result.status, result.reason) == (ExecutionStatus.FAILED, Reason.OUTPUT_LIMIT)
    assert result.stdout_truncated and not result.stderr_truncated
    assert result.stdout == expected.decode(errors="ignore")
    assert result.message and "limit" in result.message


def test_output_limit_at_the_default_100_kib(sandbox: Sandbox) -> None:
    """A run that asks for no output limit has its output cut at 100 KiB."""
    result, _ = run(sandbox, program("flood", "python"), Limits(wall_timeout_s=10))
    expected = "".join(f"line {i} ✓\n" for i in range(20000)).encode()[:102400]
    assert result.reason is Reason.OUTPUT_LIMIT and result.stdout_truncated
    assert result.stdout.encode() == expected.decode(errors="ignore").encode()
    assert len(result.stdout.encode()) in range(102400 - 3, 102401)


def test_stderr_limit_is_per_stream(sandbox: Sandbox) -> None:
    """Flooding stderr is cut on stderr alone; what went to stdout is kept whole."""
    source = "import sys\nprint('ok')\nwhile True: sys.stderr.write('e' * 1000)"
    result, _ = run(sandbox, Program("python", source))
    assert result.reason is Reason.OUTPUT_LIMIT
    assert result.stderr_truncated and not result.stdout_truncated
    assert result.stderr == "e" * FAST.output_limit_bytes
    assert result.stdout == "ok\n"


# both write at once, so their writes may interleave (beyond PIPE_BUF a pipe write is not atomic)
_LAST_WORDS = """import os
pid = os.fork()
who = b"child" if pid == 0 else b"parent"
os.write(2, who * 1000)
os.write(1, b"x" * 600_000 + who + b"\\n")
if pid:
    os.waitpid(pid, 0)
"""


def test_what_a_program_and_its_child_write_as_they_end_arrives_whole(sandbox: Sandbox) -> None:
    """Output a program and its child write just before they both exit, together more than the
    pipe holds, all arrives, run after run."""
    limits = Limits(wall_timeout_s=10, output_limit_bytes=2 << 20)
    for _ in range(5):
        result, _ = run(sandbox, Program("python", _LAST_WORDS), limits)
        assert result.status is ExecutionStatus.COMPLETED, result
        assert collections.Counter(result.stdout) == collections.Counter(
            "x" * 1_200_000 + "child\nparent\n"
        )
        assert collections.Counter(result.stderr) == collections.Counter(
            "child" * 1000 + "parent" * 1000
        )
