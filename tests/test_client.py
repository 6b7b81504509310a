"""livecode.client against real servers: runs, streaming, stdin, cancel, errors, reconnects."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from livecode.client import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    ConnectionLost,
    Finished,
    Limits,
    NotFound,
    Output,
    RateLimited,
    Status,
    TooLarge,
)
from livecode.client.models import Event
from tests.proxy import proxy_to
from tests.utils import TIMEOUT, LiveServer, embedded_settings, run_server

TICKS = "import time\nfor i in range(12):\n    print('tick', i, 'é€😀')\n    time.sleep(0.05)\n"
TICKS_OUTPUT = "".join(f"tick {i} é€😀\n" for i in range(12))


def client_of(server: LiveServer | str, **options: float) -> Client:
    url = server if isinstance(server, str) else server.url
    return Client(url, timeout_s=TIMEOUT, **options)


def outputs(events: list[Event]) -> list[Output]:
    return [event for event in events if isinstance(event, Output)]


@pytest.mark.parametrize(
    ("language", "source", "stdout"),
    [
        ("python", "import sys\nprint(input()[::-1], sys.argv[1:])", "olleh ['a', 'b c']\n"),
        (
            "js",
            "const l = require('fs').readFileSync(0, 'utf8'); console.log(l.trim(), process.argv.slice(2))",
            "hello [ 'a', 'b c' ]\n",
        ),
        (
            "cpp",
            '#include <iostream>\n#include <string>\nint main(int c, char** v) { std::string s; std::cin >> s; std::cout << s << " " << c - 1 << "\\n"; }',
            "hello 2\n",
        ),
    ],
)
def test_execute_runs_each_language_with_stdin_and_args(
    embedded_server: LiveServer, language: str, source: str, stdout: str
) -> None:
    """execute() runs the source in a new session and returns the final execution."""
    with client_of(embedded_server) as client:
        execution = client.execute(language, source, stdin="hello\n", args=["a", "b c"])
    assert (execution.status, execution.reason, execution.exit_code) == ("COMPLETED", "exit", 0)
    assert execution.stdout == stdout


def test_events_stream_in_order_as_the_program_writes(server: LiveServer) -> None:
    """Output events come seq 1, 2, ... while the program runs, then Finished with the same
    text: `out` arrives while the program still waits for the input that only follows it."""
    source = "import sys\nprint('out')\ninput()\nprint('err', file=sys.stderr)\nsys.exit(3)"
    with client_of(server) as client:
        run = client.run(client.create_session("python", source).id, interactive=True)
        events, stdout_so_far = [], ""
        for event in run:
            events.append(event)
            if isinstance(event, Output) and event.stream == "stdout":
                # 'out' and its newline may come as two chunks: python writes them apart.
                stdout_so_far += event.data
                if stdout_so_far == "out\n":
                    run.send_stdin("go\n")
    assert [e.status for e in events if isinstance(e, Status)] == ["QUEUED", "RUNNING"]
    chunks = outputs(events)
    assert [e.seq for e in chunks] == list(range(1, len(chunks) + 1))
    assert [(e.stream, e.data) for e in chunks if e.stream == "stderr"] == [("stderr", "err\n")]
    assert chunks[-1].stream == "stderr"  # 'err' is written only after the input: it comes last
    assert isinstance(events[-1], Finished) and run.result is not None
    assert (run.result.status, run.result.reason, run.result.exit_code) == (
        "FAILED",
        "runtime_error",
        3,
    )
    assert (run.stdout, run.stderr) == (run.result.stdout, run.result.stderr) == ("out\n", "err\n")


def test_compile_output_and_limits(embedded_server: LiveServer) -> None:
    """A C++ compile error is its own stream and reason; limits ask for less than the server's."""
    with client_of(embedded_server) as client:
        broken = client.execute("c++", "int main() { return 0 }")
        session = client.create_session("python", "while True: pass")
        slow = client.run(session.id, limits=Limits(timeout_s=0.5)).wait()
    assert (broken.status, broken.reason) == ("FAILED", "compile_error")
    assert "error" in broken.compile_output
    assert (slow.status, slow.reason) == ("TIMEOUT", "timeout")


def test_autosave_and_open(embedded_server: LiveServer) -> None:
    """Autosave answers with the committed version; a stale base_version is a Conflict."""
    with client_of(embedded_server) as client:
        session = client.create_session("py", "print(1)")
        saved = client.autosave(session.id, "print(2)", base_version=session.version)
        with pytest.raises(Conflict):
            client.autosave(session.id, "print(3)", base_version=session.version)
        opened = client.open_session(session.id)
        execution = client.run(session.id).wait()
    assert (session.language, saved.version, opened.version) == ("python", 2, 2)
    assert (opened.source_code, execution.stdout) == ("print(2)", "2\n")


def test_interactive_stdin_and_eof(server: LiveServer) -> None:
    """An interactive run reads what send_stdin() writes, as it is written, until close_stdin()."""
    source = "import sys\nprint('ready', flush=True)\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\nprint('bye')"
    with client_of(server) as client:
        run = client.run(client.create_session("python", source).id, interactive=True)
        for event in run:
            # python -u may write a line and its newline apart: what counts is what has come
            if isinstance(event, Output) and run.stdout == "ready\n":
                run.send_stdin("hello\n")
            if isinstance(event, Output) and run.stdout == "ready\nHELLO\n":
                run.send_stdin("again\n", eof=True)
        with pytest.raises(Conflict):  # finished: nothing reads stdin any more
            run.send_stdin("late\n")
    assert run.result is not None and run.result.stdout == "ready\nHELLO\nAGAIN\nbye\n"


def test_cancel(server: LiveServer) -> None:
    """cancel() ends a running program as CANCELLED, keeping what it wrote."""
    with client_of(server) as client:
        run = client.run(
            client.create_session(
                "python", "import time\nprint('go', flush=True)\ntime.sleep(60)"
            ).id
        )
        for event in run:
            if isinstance(event, Output):
                run.cancel()
    assert run.result is not None
    assert (run.result.status, run.result.reason, run.result.stdout) == (
        "CANCELLED",
        "cancelled",
        "go\n",
    )


def test_subscribe_late_gets_everything_from_since(embedded_server: LiveServer) -> None:
    """subscribe(since=n) on another client replays the outputs after seq n, each once."""
    with client_of(embedded_server) as client, client_of(embedded_server) as late:
        execution_id = client.run(client.create_session("python", TICKS).id).execution_id
        everything = list(late.subscribe(execution_id))
        resumed = list(late.subscribe(execution_id, since=5))
    seqs = [e.seq for e in outputs(everything)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [e.seq for e in outputs(resumed)] == seqs[5:]
    assert "".join(e.data for e in outputs(everything)) == TICKS_OUTPUT


def test_a_tty_runs_execution_has_its_starting_size(embedded_server: LiveServer) -> None:
    """The Execution of a tty run (started over REST: the client starts none) has tty and the
    size its terminal started with; that of a run without tty has neither."""
    body = {"language": "python", "source_code": "print('hi')", "tty": True, "cols": 100}
    with embedded_server.client() as http:
        tty_id = http.post("/executions", json={**body, "rows": 30}).json()["execution_id"]
    with client_of(embedded_server) as client:
        with_tty = client.subscribe(tty_id).wait()
        without = client.execute("python", "print('hi')")
    assert (with_tty.status, with_tty.tty, with_tty.cols, with_tty.rows) == (
        "COMPLETED",
        True,
        100,
        30,
    )
    assert (without.tty, without.cols, without.rows) == (False, None, None)


def test_errors_raise_the_server_error_classes(embedded_server: LiveServer) -> None:
    """Each error answer raises its class, with the server's message, and the socket stays."""
    with client_of(embedded_server) as client:
        with pytest.raises(BadRequest, match="unknown language 'cobol'"):
            client.create_session("cobol")
        with pytest.raises(NotFound):
            client.subscribe("00000000-0000-0000-0000-000000000000")
        with pytest.raises(NotFound):
            client.cancel("00000000-0000-0000-0000-000000000000")
        with pytest.raises(TooLarge):
            client.create_session("python", "#" * (embedded_server.settings.max_source_bytes + 1))
        session = client.create_session("python", "print(1)")
        with pytest.raises(BadRequest, match="timeout_s"):
            client.run(session.id, limits=Limits(timeout_s=-1))
        run = client.run(session.id)
        with pytest.raises(Conflict, match="interactive"):
            run.send_stdin("x")
        assert run.wait().stdout == "1\n"
        assert [language.id for language in client.languages()] == ["python", "javascript", "c++"]


def test_rate_limited_carries_retry_after(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The second run in a minute, past a limit of 1, raises RateLimited with retry_after."""
    with run_server(embedded_settings(tmp_path_factory, runs_per_minute=1)) as server:
        with client_of(server) as client:
            session = client.create_session("python", "print(1)")
            client.run(session.id).wait()
            with pytest.raises(RateLimited) as raised:
                client.run(session.id)
    assert raised.value.retry_after is not None and 0 < raised.value.retry_after <= 60


def test_unreachable_server_is_connection_lost() -> None:
    """Nothing listening: calls raise ConnectionLost, not a websockets or urllib exception."""
    with socket_without_server() as url:
        with pytest.raises(ConnectionLost, match="cannot reach"):
            client_of(url).ping()
        with pytest.raises(ConnectionLost, match="no answer"):
            client_of(url).languages()


@pytest.mark.parametrize("cuts", [1, 3])
def test_reconnects_when_the_socket_drops_mid_run(embedded_server: LiveServer, cuts: int) -> None:
    """The socket is reset mid-run (once, or three times): the run's events still come once
    each, and the joined output equals the stored output byte for byte."""
    with proxy_to(embedded_server.url) as proxy, client_of(proxy.url) as client:
        run = client.run(client.create_session("python", TICKS).id)
        events = []
        for event in run:
            events.append(event)
            if isinstance(event, Output) and event.seq in (2, 5, 8)[:cuts]:
                proxy.cut()
    assert proxy.accepted == 1 + cuts
    assert [e.seq for e in outputs(events)] == list(range(1, len(outputs(events)) + 1))
    assert run.result is not None and run.result.status == "COMPLETED"
    assert "".join(e.data for e in outputs(events)) == run.result.stdout == TICKS_OUTPUT
    assert [e.status for e in events if isinstance(e, Status)] == ["QUEUED", "RUNNING"]


@pytest.mark.anyio
async def test_async_client_reconnects_when_the_socket_drops_mid_run(
    embedded_server: LiveServer,
) -> None:
    """The same as the threading client, with AsyncClient."""
    with proxy_to(embedded_server.url) as proxy:
        async with AsyncClient(proxy.url, timeout_s=TIMEOUT) as client:
            session = await client.create_session("python", TICKS)
            run = await client.run(session.id)
            events = []
            async for event in run:
                events.append(event)
                if isinstance(event, Output) and event.seq == 3:
                    proxy.cut()
    assert proxy.accepted == 2
    assert [e.seq for e in outputs(events)] == list(range(1, len(outputs(events)) + 1))
    assert run.result is not None
    assert "".join(e.data for e in outputs(events)) == run.result.stdout == TICKS_OUTPUT


@pytest.mark.anyio
async def test_async_client_interactive_and_errors(server: LiveServer) -> None:
    """AsyncClient: interactive stdin, cancel, languages and error classes, as the sync one."""
    async with AsyncClient(server.url, timeout_s=TIMEOUT) as client:
        session = await client.create_session(
            "js", "process.stdin.on('data', d => process.stdout.write(d.toString().toUpperCase()))"
        )
        run = await client.run(session.id, interactive=True)
        await run.send_stdin("abc\n")
        async for event in run:
            if isinstance(event, Output):
                await run.close_stdin()
        sleeper = await client.run(
            (await client.create_session("python", "import time; time.sleep(60)")).id
        )
        await sleeper.cancel()
        cancelled = await sleeper.wait()
        with pytest.raises(NotFound):
            await client.open_session("00000000-0000-0000-0000-000000000000")
        languages = await client.languages()
    assert run.result is not None and (run.result.status, run.result.stdout) == (
        "COMPLETED",
        "ABC\n",
    )
    assert cancelled.status == "CANCELLED"
    assert {language.id for language in languages} == {"python", "javascript", "c++"}


def test_gives_up_after_reconnect_timeout(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The server goes away for good: a waiting run raises ConnectionLost once
    reconnect_timeout_s has passed, not never."""
    with run_server(embedded_settings(tmp_path_factory)) as server, proxy_to(server.url) as proxy:
        client = client_of(proxy.url, reconnect_timeout_s=1.0)
        run = client.run(client.create_session("python", "import time; time.sleep(60)").id)
        next(iter(run))  # QUEUED
        with socket_without_server() as nowhere:
            proxy.point_to(int(nowhere.rsplit(":", 1)[1]))
            proxy.cut()
            started = time.monotonic()
            with pytest.raises(ConnectionLost, match="cannot reach"):
                run.wait()
        assert 0.9 < time.monotonic() - started < TIMEOUT
        with pytest.raises(ConnectionLost):
            client.ping()
        client.close()


def test_reconnects_to_another_server_after_a_restart(
    distributed_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Distributed: the server holding the socket shuts down mid-run (close 1012) and another
    takes its place; the client resumes there and misses nothing, repeats nothing."""
    caplog.set_level("INFO", logger="livecode.client")
    settings = distributed_server.settings
    first = contextlib.ExitStack()
    server_a = first.enter_context(run_server(settings))
    with proxy_to(server_a.url) as proxy, client_of(proxy.url) as client:
        run = client.run(client.create_session("python", TICKS).id)
        events: list[Event] = []
        stopping = threading.Thread(target=first.close)  # shuts A down: close code 1012
        with run_server(settings) as server_b:
            for event in run:
                events.append(event)
                if isinstance(event, Output) and event.seq == 3:
                    proxy.point_to(int(server_b.url.rsplit(":", 1)[1]))
                    stopping.start()
            stopping.join(TIMEOUT)
    assert "socket closed (1012" in caplog.text
    assert proxy.accepted == 2
    assert [e.seq for e in outputs(events)] == list(range(1, len(outputs(events)) + 1))
    assert run.result is not None and run.result.status == "COMPLETED"
    assert "".join(e.data for e in outputs(events)) == run.result.stdout == TICKS_OUTPUT


@contextlib.contextmanager
def socket_without_server() -> Iterator[str]:
    """The URL of a port that refuses connections (bound, never listening)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_the_readme_example_runs(
    embedded_server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """README, "Clients": the example prints what its comments say."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    clients = readme[readme.index("## Clients") :]
    example = re.findall(r"```python\n(.*?)```", clients, re.S)[0]
    exec(example.replace("http://127.0.0.1:8000", embedded_server.url), {})
    assert capsys.readouterr().out == "stdout 1 'hello, ada\\n'\nCOMPLETED 0\nhi\n\n"
