"""`livecode run` and `livecode languages` as a shell runs them: a subprocess and a real server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from livecode.client.models import Execution
from livecode.client.terminal import EXIT_CODES, exit_code
from tests.utils import (
    REPO,
    TIMEOUT,
    LiveServer,
    free_port,
    livecode_env,
    wait_final,
    wait_until,
)


def livecode(
    server: LiveServer | str,
    *args: str,
    cwd: Path,
    script: str | None = None,
    **options: object,
) -> subprocess.CompletedProcess[str]:
    """`python -m livecode ARGS` against `server`, its stdin /dev/null unless `input` is given;
    with `script`, `python -c SCRIPT ARGS` (the CLI with something injected)."""
    url = server if isinstance(server, str) else server.url
    options.setdefault("stdin", subprocess.DEVNULL if "input" not in options else None)
    command = ["-m", "livecode"] if script is None else ["-c", script]
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, *command, *args],
        env=livecode_env({"LIVECODE_SERVER": url}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        **options,
    )


def popen(server: LiveServer, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "livecode", *args],
        env=livecode_env({"LIVECODE_SERVER": server.url}),
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def sigint_as_a_terminal_gives_it() -> Iterator[None]:
    """The processes started in the block get SIGINT at its default, as a shell's foreground
    job does, however these tests were started.

    A test run started in the background without job control (`(pytest &)`, `nohup pytest &`,
    `bash -c 'pytest & wait'`) ignores SIGINT, and a child inherits that: Python then installs
    no KeyboardInterrupt handler, and a Ctrl-C never reaches `livecode run`, which runs on for
    the program's 60 s (subprocess.Popen resets SIGPIPE, never SIGINT). A handler of ours
    instead is reset to the default by the child's exec.
    """
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


# How `livecode run` ends after a Ctrl-C: by SIGINT, as Python does after one it does not catch
# (subprocess's returncode; a shell's $? is 130, terminal.EXIT_INTERRUPTED).
INTERRUPTED = -signal.SIGINT


def write(directory: Path, name: str, source: str) -> str:
    (directory / name).write_text(source)
    return name


def test_exits_with_the_programs_status_and_keeps_stdout_and_stderr_apart(
    server: LiveServer, tmp_path: Path
) -> None:
    """stdout to stdout, stderr to stderr, byte for byte, and the program's exit status."""
    name = write(
        tmp_path,
        "hello.py",
        "import sys\nprint('out é')\nprint('err', file=sys.stderr)\nsys.exit(3)",
    )
    done = livecode(server, "run", name, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out é\n", "err\n")


@pytest.mark.parametrize(
    ("name", "source", "options", "status", "message"),
    [
        ("bad.cpp", "int main() { return 0 }", [], 122, "livecode: compile error"),
        ("loop.js", "for (;;) {}", ["--timeout-s", "1"], 124, "livecode: time limit exceeded"),
        (
            "bomb.py",
            "chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))",
            ["--memory-mb", "64"],
            125,
            "livecode: memory limit exceeded",
        ),
        (
            "flood.py",
            "while True:\n    print('y' * 1000)",
            [],
            123,
            "livecode: output limit exceeded",
        ),
        ("kill.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", [], 137, None),
    ],
)
def test_each_way_to_end_has_its_exit_status(
    embedded_server: LiveServer,
    tmp_path: Path,
    name: str,
    source: str,
    options: list[str],
    status: int,
    message: str | None,
) -> None:
    """Compile error, timeout, memory and output limits: a code each and one line on stderr;
    a signal: 128 + its number, as a shell reports it."""
    done = livecode(embedded_server, "run", *options, write(tmp_path, name, source), cwd=tmp_path)
    assert done.returncode == status
    last_line = done.stderr.splitlines()[-1] if done.stderr else None
    if message is not None:
        assert last_line is not None and last_line.startswith(message)
    else:
        assert not (last_line or "").startswith("livecode:")
    if name == "bad.cpp":
        assert "error" in done.stderr and done.stdout == ""  # the compiler's messages


def test_json_prints_every_event_as_a_line(embedded_server: LiveServer, tmp_path: Path) -> None:
    name = write(tmp_path, "two.py", "print(1)\nprint(2)")
    done = livecode(embedded_server, "run", "--json", name, cwd=tmp_path)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0
    assert [e["type"] for e in events][:2] == ["status", "status"] and events[-1][
        "type"
    ] == "finished"
    outputs = [e for e in events if e["type"] == "output"]
    assert "".join(e["data"] for e in outputs) == events[-1]["stdout"] == "1\n2\n"
    assert [e["seq"] for e in outputs] == list(range(1, len(outputs) + 1))


def test_piped_input_reaches_an_interactive_run_as_it_is_written(
    server: LiveServer, tmp_path: Path
) -> None:
    """The prompt arrives before any input is given; each line then goes to the program."""
    name = write(
        tmp_path,
        "ask.py",
        "print('name?', flush=True)\nprint('hello', input())\nprint('and', input())",
    )
    process = popen(server, "run", name, cwd=tmp_path)
    assert process.stdin is not None and process.stdout is not None
    try:
        assert process.stdout.readline() == "name?\n"  # streamed while the program waits
        process.stdin.write("ada\n")
        process.stdin.flush()
        assert process.stdout.readline() == "hello ada\n"
        process.stdin.write("grace\n")
        process.stdin.close()  # EOF
        assert process.stdout.read() == "and grace\n"
        assert process.wait(TIMEOUT) == 0
    finally:
        process.kill()
        process.wait()


def test_stdin_given_as_text_a_file_or_a_redirect(
    embedded_server: LiveServer, tmp_path: Path
) -> None:
    name = write(tmp_path, "cat.py", "import sys\nprint(sys.stdin.read().upper(), end='')")
    (tmp_path / "input.txt").write_text("from a file\n")
    as_text = livecode(embedded_server, "run", name, "--stdin", "text\n", cwd=tmp_path)
    as_file = livecode(embedded_server, "run", name, "--stdin-file", "input.txt", cwd=tmp_path)
    with open(tmp_path / "input.txt") as redirect:
        redirected = livecode(embedded_server, "run", name, cwd=tmp_path, stdin=redirect)
    as_piped = livecode(embedded_server, "run", name, cwd=tmp_path, input="piped\nlines\n")
    assert [d.stdout for d in (as_text, as_file, redirected, as_piped)] == [
        "TEXT\n",
        "FROM A FILE\n",
        "FROM A FILE\n",
        "PIPED\nLINES\n",
    ]


def test_arguments_after_double_dash_are_passed_verbatim(
    embedded_server: LiveServer, tmp_path: Path
) -> None:
    name = write(tmp_path, "argv.js", "console.log(JSON.stringify(process.argv.slice(2)))")
    done = livecode(embedded_server, "run", name, "--", "-v", "--", "a b", "--json", cwd=tmp_path)
    assert json.loads(done.stdout) == ["-v", "--", "a b", "--json"]


def test_language_from_the_extension_or_the_flag(
    embedded_server: LiveServer, tmp_path: Path
) -> None:
    for name in ("m.mjs", "c.cc", "x.cxx"):
        source = (
            "console.log('ok')"
            if name.endswith("js")
            else '#include <cstdio>\nint main() { puts("ok"); }'
        )
        assert (
            livecode(embedded_server, "run", write(tmp_path, name, source), cwd=tmp_path).stdout
            == "ok\n"
        )
    write(tmp_path, "script.txt", "print('ok')")
    unknown = livecode(embedded_server, "run", "script.txt", cwd=tmp_path)
    assert unknown.returncode == 2 and "use -l LANGUAGE" in unknown.stderr
    assert livecode(embedded_server, "run", "-l", "py", "script.txt", cwd=tmp_path).stdout == "ok\n"
    refused = livecode(embedded_server, "run", "-l", "cobol", "script.txt", cwd=tmp_path)
    assert refused.returncode == 2 and "unknown language 'cobol'" in refused.stderr


def test_an_unreachable_server_is_exit_69(tmp_path: Path) -> None:
    done = livecode(
        f"http://127.0.0.1:{free_port()}", "run", write(tmp_path, "a.py", ""), cwd=tmp_path
    )
    assert done.returncode == 69 and done.stderr.startswith(
        "livecode: cannot reach ws://127.0.0.1:"
    )


def test_ctrl_c_cancels_the_run(embedded_server: LiveServer, tmp_path: Path) -> None:
    """SIGINT: the run is cancelled on the server, and livecode ends by SIGINT (a shell shows
    130, and a script that ran it stops)."""
    name = write(tmp_path, "sleep.py", "import time\nprint('started', flush=True)\ntime.sleep(60)")
    with sigint_as_a_terminal_gives_it():
        process = popen(embedded_server, "run", "--json", name, cwd=tmp_path)
    assert process.stdout is not None
    try:
        execution_id = json.loads(process.stdout.readline())["execution_id"]
        while json.loads(process.stdout.readline())["type"] != "output":
            pass
        process.send_signal(signal.SIGINT)
        assert process.wait(TIMEOUT) == INTERRUPTED
    finally:
        process.kill()
        process.wait()
    execution = httpx.get(
        f"{embedded_server.url}/executions/{execution_id}", timeout=TIMEOUT
    ).json()
    assert (execution["status"], execution["stdout"]) == ("CANCELLED", "started\n")


# `livecode run` with a Ctrl-C that lands at the worst moment: while the client takes the run's
# `finished` event off its inbox, before handing it on.
CTRL_C_AS_FINISHED_IS_TAKEN = """\
import signal, sys
from livecode import cli
from livecode.client import state

add = state.Transcript.add

def add_then_ctrl_c(self, event):
    add(self, event)
    if type(event).__name__ == "Finished":
        signal.raise_signal(signal.SIGINT)

state.Transcript.add = add_then_ctrl_c
sys.exit(cli.main(sys.argv[1:]))
"""


def test_ctrl_c_as_the_run_finishes_needs_no_second_one(
    embedded_server: LiveServer, tmp_path: Path
) -> None:
    """A Ctrl-C that lands as the client takes `finished` loses no event: livecode shows the
    end and ends at once, where it used to wait for the end again, until a second one."""
    name = write(tmp_path, "hello.py", "print('hello')")
    with sigint_as_a_terminal_gives_it():
        done = livecode(
            embedded_server, "run", "--json", name, cwd=tmp_path, script=CTRL_C_AS_FINISHED_IS_TAKEN
        )
    assert done.returncode == INTERRUPTED, done.stderr
    shown = [json.loads(line) for line in done.stdout.splitlines()]
    assert shown[-1]["type"] == "finished" and shown[-1]["stdout"] == "hello\n"


def test_ctrl_c_cancels_the_run_while_nobody_reads_stdout(
    embedded_server: LiveServer, tmp_path: Path
) -> None:
    """`livecode run ... | less`, less not reading on: a Ctrl-C cancels the run at once, though
    livecode waits to write output the pipe has no room for."""
    name = write(
        tmp_path,
        "chatty.py",
        "import time\nfor _ in range(3000):\n    print('x' * 30, flush=True)\ntime.sleep(60)",
    )
    with sigint_as_a_terminal_gives_it():
        process = popen(embedded_server, "run", "--json", name, cwd=tmp_path)
    assert process.stdout is not None
    try:
        execution_id = json.loads(process.stdout.readline())["execution_id"]
        wchan = Path(f"/proc/{process.pid}/wchan")
        wait_until(lambda: "pipe_write" in wchan.read_text(), "livecode waits on a full pipe")
        process.send_signal(signal.SIGINT)
        with httpx.Client(base_url=embedded_server.url, timeout=TIMEOUT) as client:
            assert wait_final(client, execution_id)["status"] == "CANCELLED"
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        assert process.returncode == INTERRUPTED
        assert json.loads(stdout.splitlines()[-1])["status"] == "CANCELLED"
        assert "cancelling" in stderr
    finally:
        process.kill()
        process.wait()


# `livecode run` with a Ctrl-C that lands as the server's answer to `run` arrives: the
# execution exists, and the CLI holds no Run yet. It says which session it made.
CTRL_C_AS_THE_RUN_IS_QUEUED = """\
import signal, sys
from livecode import cli
from livecode.client import sync

create_session, run_init = sync.Client.create_session, sync.Run.__init__

def create_and_tell(self, *args, **kwargs):
    session = create_session(self, *args, **kwargs)
    print("session", session.id, file=sys.stderr, flush=True)
    return session

def init_then_ctrl_c(self, *args, **kwargs):
    signal.raise_signal(signal.SIGINT)
    run_init(self, *args, **kwargs)

sync.Client.create_session = create_and_tell
sync.Run.__init__ = init_then_ctrl_c
sys.exit(cli.main(sys.argv[1:]))
"""


def test_ctrl_c_as_the_run_is_queued_cancels_it(
    embedded_server: LiveServer, tmp_path: Path
) -> None:
    """A Ctrl-C before livecode has the run in hand (its `run` answered, nothing shown yet)
    still cancels it: it used to leave it running, watched by nobody, to its time limit."""
    name = write(tmp_path, "sleep.py", "import time\ntime.sleep(60)")
    with sigint_as_a_terminal_gives_it():
        done = livecode(
            embedded_server, "run", name, cwd=tmp_path, script=CTRL_C_AS_THE_RUN_IS_QUEUED
        )
    assert done.returncode == INTERRUPTED, done.stderr
    session_id = done.stderr.split("session ", 1)[1].split()[0]
    with httpx.Client(base_url=embedded_server.url, timeout=TIMEOUT) as client:

        def final_executions() -> list[dict[str, object]] | None:
            runs = client.get(f"/executions/session/{session_id}").json()
            return (
                runs
                if runs and all(r["status"] not in ("QUEUED", "RUNNING") for r in runs)
                else None
            )

        executions = wait_until(final_executions, "the run to end", timeout=TIMEOUT / 2)
    assert [execution["status"] for execution in executions] == ["CANCELLED"]


def test_ctrl_c_stops_the_script_that_ran_livecode(
    embedded_server: LiveServer, tmp_path: Path
) -> None:
    """A Ctrl-C at a terminal reaches the script and livecode; bash stops the script only
    when its child ended by SIGINT (a child that exits 130 handled it, says bash): so the
    line after `livecode run` never runs."""
    name = write(tmp_path, "sleep.py", "import time\nprint('started', flush=True)\ntime.sleep(60)")
    script = f"{sys.executable} -m livecode run {name}; echo went on after $?"
    with sigint_as_a_terminal_gives_it():
        shell = subprocess.Popen(
            ["bash", "-c", script],
            env=livecode_env({"LIVECODE_SERVER": embedded_server.url}),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a process group of its own, as a terminal's job
        )
    assert shell.stdout is not None
    try:
        assert shell.stdout.readline() == "started\n"
        os.killpg(shell.pid, signal.SIGINT)  # what Ctrl-C at its terminal does
        assert shell.wait(TIMEOUT) == INTERRUPTED
        assert "went on" not in shell.stdout.read()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()


def test_a_closed_stdout_stops_the_run(embedded_server: LiveServer, tmp_path: Path) -> None:
    """`livecode run ... | head -1`: the program is stopped, as SIGPIPE would stop it."""
    name = write(
        tmp_path,
        "count.py",
        "import itertools, time\nfor i in itertools.count():\n    print(i, flush=True)\n    time.sleep(0.01)",
    )
    command = f"{sys.executable} -m livecode run {name} | head -1; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(
        ["bash", "-c", command],
        env=livecode_env({"LIVECODE_SERVER": embedded_server.url}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert (done.returncode, done.stdout, done.stderr) == (141, "0\n", "")


def test_languages_as_a_table_and_as_json(embedded_server: LiveServer, tmp_path: Path) -> None:
    table = livecode(embedded_server, "languages", cwd=tmp_path).stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "VERSION", "ALIASES"]
    assert [line.split()[0] for line in table[1:]] == ["python", "javascript", "c++"]
    as_json = json.loads(livecode(embedded_server, "languages", "--json", cwd=tmp_path).stdout)
    assert [language["id"] for language in as_json] == ["python", "javascript", "c++"]


# What the client commands may load of this repository: the client, the command line, and the
# error classes the client raises. Anything else of livecode or runners is the server.
CLIENT_MODULES = {"livecode", "livecode.cli", "livecode.errors"}
# Third-party and standard modules the client does without: each costs its start (bench_cli.py).
NOT_IMPORTED = (
    "starlette sqlalchemy pydantic uvicorn dramatiq redis psycopg httpx websockets asyncio "
    "logging dataclasses concurrent"
)


@pytest.mark.parametrize("command", [["run", "hello.py"], ["languages"]])
def test_client_commands_import_no_part_of_the_server(
    embedded_server: LiveServer, tmp_path: Path, command: list[str]
) -> None:
    """`livecode run` and `livecode languages` load the client and nothing of the server:
    neither livecode's server modules nor runners, nor what the server is built on."""
    write(tmp_path, "hello.py", "print('hello')")
    check = (
        "import json, sys\n"
        "from livecode.cli import main\n"
        f"status = main({command!r})\n"
        "print(json.dumps([status, sorted(sys.modules)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check],
        env=livecode_env({"LIVECODE_SERVER": embedded_server.url}),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    status, modules = json.loads(done.stdout.splitlines()[-1])
    assert status == 0, done.stderr
    ours = {name for name in modules if name.split(".")[0] in ("livecode", "runners")}
    server_parts = {
        name for name in ours - CLIENT_MODULES if not name.startswith("livecode.client")
    }
    assert server_parts == set()
    assert {name.split(".")[0] for name in modules} & set(NOT_IMPORTED.split()) == set()


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"status": "COMPLETED", "reason": "exit", "exit_code": 0}, 0),
        ({"status": "FAILED", "reason": "runtime_error", "exit_code": 300}, 300 & 0xFF),
        ({"status": "FAILED", "reason": "runtime_error", "signal": 11}, 139),
        *[({"status": "FAILED", "reason": reason}, code) for reason, code in EXIT_CODES.items()],
    ],
)
def test_exit_status_table(fields: dict[str, object], status: int) -> None:
    assert exit_code(Execution(execution_id="e", **fields)) == status  # type: ignore[arg-type]


def test_help_shows_the_exit_status_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "livecode", "run", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        timeout=TIMEOUT,
    )
    assert "124     timeout" in done.stdout and "128+N" in done.stdout


def test_a_terminals_lines_reach_the_program_and_ctrl_d_ends_them(
    embedded_server: LiveServer, tmp_path: Path
) -> None:
    """stdin a terminal: the run is interactive; each line typed goes to the program as it is
    typed, and Ctrl-D at the start of a line is its EOF."""
    import pty

    name = write(
        tmp_path,
        "lines.py",
        "import sys\nprint('>', flush=True)\nfor line in sys.stdin:\n    print(line.strip()[::-1], flush=True)\nprint('eof')",
    )
    main, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "livecode", "run", name],
        env=livecode_env({"LIVECODE_SERVER": embedded_server.url}),
        cwd=tmp_path,
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(terminal)
    assert process.stdout is not None
    try:
        assert process.stdout.readline() == ">\n"
        os.write(main, b"abc\n")
        assert process.stdout.readline() == "cba\n"
        os.write(main, b"xyz\n\x04")
        assert process.stdout.read() == "zyx\neof\n"
        assert process.wait(TIMEOUT) == 0
    finally:
        process.kill()
        process.wait()
        os.close(main)
