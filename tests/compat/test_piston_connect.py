"""WS /api/v2/connect: Piston's interactive execution, with a raw WebSocket client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests.utils import LiveServer, piston_socket, wait_until

pytestmark = pytest.mark.anyio

GREETER = "name = input()\nprint('hi ' + name)\nprint(input().upper())"
SLEEPER = "import time\nprint('ready', flush=True)\ntime.sleep(60)"


async def test_interactive_python(embedded_server: LiveServer) -> None:
    """The program reads what the client sends while it runs; the job ends with 4999."""
    async with piston_socket(embedded_server) as socket:
        await socket.init(GREETER, stdin="ignored\n")
        runtime = await socket.recv()
        assert runtime["type"] == "runtime" and runtime["language"] == "python"
        assert await socket.recv() == {"type": "stage", "stage": "run"}
        await socket.send({"type": "data", "stream": "stdin", "data": "bob\n"})
        await socket.output("hi bob\n")
        await socket.send({"type": "data", "stream": "stdin", "data": "loud\n"})
        messages, code, reason = await socket.rest()
    assert _stdout(messages) == "LOUD\n"
    assert messages[-1] == {"type": "exit", "stage": "run", "code": 0, "signal": None}
    assert (code, reason) == (4999, "Job Completed")


async def test_cpp_stages(embedded_server: LiveServer) -> None:
    """A compiled runtime goes through the compile stage, then the run stage."""
    # stdin is sent once the program runs: the runner drops what arrives during a compile.
    source = (
        "#include <iostream>\n#include <string>\nint main() { std::string s;"
        ' std::cout << "ready" << std::endl; std::getline(std::cin, s);'
        ' std::cerr << "got " << s << std::endl; return 4; }'
    )
    async with piston_socket(embedded_server) as socket:
        await socket.init(source, "c++")
        assert (await socket.recv())["type"] == "runtime"
        assert await socket.recv() == {"type": "stage", "stage": "compile"}
        compiled = await socket.output("ready\n")
        await socket.send({"type": "data", "stream": "stdin", "data": "line\n"})
        messages, code, _ = await socket.rest()
    assert [m for m in compiled if m["type"] != "data"] == [
        {"type": "exit", "stage": "compile", "code": 0, "signal": None},
        {"type": "stage", "stage": "run"},
    ]
    assert "".join(m["data"] for m in messages if m["type"] == "data") == "got line\n"
    assert messages[-1] == {"type": "exit", "stage": "run", "code": 4, "signal": None}
    assert code == 4999


async def test_failed_compile_ends_the_job(embedded_server: LiveServer) -> None:
    """A compile error streams the compiler's messages and ends without a run stage."""
    async with piston_socket(embedded_server) as socket:
        await socket.init("int main( {", "cpp")
        messages, code, _ = await socket.rest()
    kinds = [message["type"] for message in messages]
    assert kinds[:2] == ["runtime", "stage"] and "data" in kinds
    assert messages[-1] == {"type": "exit", "stage": "compile", "code": 1, "signal": None}
    assert {"type": "stage", "stage": "run"} not in messages
    assert code == 4999


async def test_a_signal_ends_the_run(embedded_server: LiveServer) -> None:
    """A signal kills the program (Piston's own signals reach nothing); exit names it."""
    async with piston_socket(embedded_server) as socket:
        await socket.init(SLEEPER)
        await socket.output("ready\n")
        started = time.monotonic()
        await socket.send({"type": "signal", "signal": "SIGTERM"})
        messages, code, _ = await socket.rest()
    assert time.monotonic() - started < 10
    assert messages == [{"type": "exit", "stage": "run", "code": None, "signal": "SIGTERM"}]
    assert code == 4999


async def test_a_timeout_is_sigkill_without_livecodes_notice(embedded_server: LiveServer) -> None:
    """run_timeout kills the program; stderr carries nothing the program did not write."""
    async with piston_socket(embedded_server) as socket:
        await socket.init(SLEEPER, run_timeout=500)
        messages, code, _ = await socket.rest()
    assert _stdout(messages) == "ready\n"
    assert all(m["stream"] == "stdout" for m in messages if m["type"] == "data")
    assert messages[-1] == {"type": "exit", "stage": "run", "code": None, "signal": "SIGKILL"}
    assert code == 4999


@pytest.mark.parametrize(
    ("messages", "close"),
    [
        ([], (4001, "Initialization Timeout")),
        ([{"type": "data", "stream": "stdin", "data": "x"}], (4003, "Not yet initialized")),
        ([{"type": "signal", "signal": "SIGKILL"}], (4003, "Not yet initialized")),
        (
            ["init", {"type": "data", "stream": "stdout", "data": "x"}],
            (4004, "Can only write to stdin"),
        ),
        (["init", {"type": "signal", "signal": "SIGNOPE"}], (4005, "Invalid signal")),
        (["init", "init"], (4000, "Already Initialized")),
    ],
)
async def test_close_codes(
    embedded_server: LiveServer, messages: list[Any], close: tuple[int, str]
) -> None:
    """Each misuse closes the socket with Piston's code and reason."""
    async with piston_socket(embedded_server) as socket:
        for i, message in enumerate(messages):
            if message != "init":
                await socket.send(message)
            elif i == 0:
                await socket.init(SLEEPER)
                await socket.until("stage")
            else:
                await socket.init(SLEEPER)
        _, code, reason = await socket.rest()
    assert (code, reason) == close


async def test_errors_are_told_then_closed(embedded_server: LiveServer) -> None:
    """An unknown runtime, or a message that is no JSON: an error message, then 4002."""
    async with piston_socket(embedded_server) as socket:
        await socket.send({"type": "init", "language": "cobol", "version": "*", "files": []})
        messages, code, reason = await socket.rest()
    assert messages == [{"type": "error", "message": "cobol-* runtime is unknown"}]
    assert (code, reason) == (4002, "Notified Error")
    async with piston_socket(embedded_server) as socket:
        await socket.connection.send("{")
        messages, code, _ = await socket.rest()
    assert messages[0]["type"] == "error" and code == 4002


async def test_a_client_that_leaves_cancels_its_run(embedded_server: LiveServer) -> None:
    """The run of a socket that goes away is cancelled, not left to its time limit."""
    async with piston_socket(embedded_server) as socket:
        await socket.init(SLEEPER + "  # leaves")
        await socket.output("ready\n")
    engine = sa.create_engine(embedded_server.settings.database_url)
    query = sa.text("SELECT status FROM executions WHERE source_code LIKE '%# leaves'")
    try:

        def cancelled() -> bool:
            with engine.connect() as connection:
                return connection.execute(query).scalar_one() == "CANCELLED"

        await asyncio.to_thread(wait_until, cancelled, "the run is cancelled")
    finally:
        engine.dispose()


def _stdout(messages: list[dict[str, Any]]) -> str:
    return "".join(m["data"] for m in messages if m["type"] == "data" and m["stream"] == "stdout")
