"""Fan-out: one execution followed by many sockets, one of them stalled (issue 14).

bench/bench_fanout.py measures the lag and the CPU with 1,000 followers; this tells the story a
user checks: everybody gets every byte, and a follower that stops reading holds nobody back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from livecode import events
from tests.utils import (
    TIMEOUT,
    LiveServer,
    Socket,
    embedded_settings,
    joined,
    outputs,
    own_distributed_server,
    run_server,
    ws_connect,
)

pytestmark = pytest.mark.anyio

FOLLOWERS = 50
LINES = 300
# What the kernel holds for a socket that reads nothing: the client's receive buffer (4 KB
# here) and the server's send buffer, which Linux grows to 4 MB (tcp_wmem) on loopback, about
# 2.8 MB of small writes measured here. The program prints more than that (3 MB in 10 KB
# lines), so that the server's writes to the stalled socket do wait.
OUTPUT_LIMIT_BYTES = 4 << 20
PROGRAM = f"""\
import sys
sys.stdin.readline()
for i in range({LINES}):
    print("line %04d " % i + "x" * 10_000, flush=True)
sys.stdin.readline()
print("bye")
"""
EXPECTED = "".join(f"line {i:04d} " + "x" * 10_000 + "\n" for i in range(LINES)) + "bye\n"
LAST_LINE = f"line {LINES - 1:04d} "


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server whose runs may print 4 MB, in both modes."""
    if request.param == "embedded":
        settings = embedded_settings(tmp_path_factory, output_limit_bytes=OUTPUT_LIMIT_BYTES)
        with run_server(settings) as embedded:
            yield embedded
        return
    with own_distributed_server(LIVECODE_OUTPUT_LIMIT_BYTES=str(OUTPUT_LIMIT_BYTES)) as distributed:
        yield distributed


async def test_every_follower_gets_every_byte_and_a_stalled_one_holds_nobody_back(
    server: LiveServer,
) -> None:
    """50 sockets follow a run, byte for byte; one that reads nothing does not hold them up."""
    async with ws_connect(server) as control:
        execution_id = await _run_interactive(control, PROGRAM)
        # Given a follower that subscribes and then reads nothing (a tiny receive buffer),
        stalled = await _stalled_follower(server, execution_id)
        # and 50 that read everything,
        followers = [_Follower(server, execution_id) for _ in range(FOLLOWERS)]
        tasks = [asyncio.create_task(follower.follow()) for follower in followers]
        try:
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*(follower.running.wait() for follower in followers))
            # when the program prints 3 MB and then waits for input,
            await control.send({"type": "stdin", "execution_id": execution_id, "data": "go\n"})
            # then every other follower gets all of it while the stalled one still reads nothing
            # (a follower held up behind it would never get there: the program waits);
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*(follower.printed_all.wait() for follower in followers))
            await control.send({"type": "stdin", "execution_id": execution_id, "data": "end\n"})
            async with asyncio.timeout(TIMEOUT):
                received = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        # and once it reads again, the stalled follower gets everything too, in order.
        late = await _read_until_finished(stalled)
    finished = received[0][-1]
    assert finished["type"] == "finished" and finished["status"] == "COMPLETED", finished
    assert finished["stdout"] == EXPECTED
    for got in [*received, late]:
        assert joined(got, "stdout") == EXPECTED
        chunks = outputs(got)
        assert [e["seq"] for e in chunks] == list(range(1, len(chunks) + 1))
        assert got[-1] == finished
    assert all(got == received[0] for got in received)  # the same events, every one


SIZES = (1, 300, 70_000, 5)  # a frame's length in 7 bits, then in 16, then in 64, then 7
PACED = """\
import sys, time
sys.stdin.readline()
for size in {sizes}:
    print("{letter}" * (size // 2) + "x" * (size % 2), end="", flush=True)
    time.sleep(0.2)
"""
PACED_OUTPUT = "".join("é" * (size // 2) + "x" * (size % 2) for size in SIZES)


async def test_followers_that_keep_up_have_their_output_written_straight(
    server: LiveServer,
) -> None:
    """Output reaches followers that keep up without their tasks: the relay writes one frame
    to every socket (livecode_relay_written_total counts them), and every size arrives as it
    would have otherwise, in order, byte for byte."""
    written_before = _relay_written(server)
    received = await _follow_paced_run(server, followers=3)
    for got in received:
        assert joined(got, "stdout") == PACED_OUTPUT
        assert got[-1]["type"] == "finished" and got[-1]["stdout"] == PACED_OUTPUT
    assert all(got == received[0] for got in received)
    sockets = 3 + 1  # and the one that ran it, which follows its run
    assert _relay_written(server) - written_before == sockets * len(outputs(received[0]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # that protocol is deprecated,
@pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated")  # twice
async def test_a_server_without_the_protocol_it_writes_for_sends_the_asgi_way(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Under another uvicorn WebSocket protocol (its older websockets one), followers get the same events, through their
    tasks: nothing is written straight."""
    with run_server(embedded_settings(tmp_path_factory), ws="websockets") as legacy_server:
        written_before = _relay_written(legacy_server)
        received = await _follow_paced_run(legacy_server, followers=2)
        assert _relay_written(legacy_server) == written_before
    for got in received:
        assert joined(got, "stdout") == PACED_OUTPUT


async def test_followers_of_two_runs_at_once_get_their_own_output(server: LiveServer) -> None:
    """Two runs printing at the same time, each followed by its own sockets: every follower
    gets its run's output and none of the other's (one frame is built per event, for all)."""
    first, second = await asyncio.gather(
        _follow_paced_run(server, followers=2, letter="a"),
        _follow_paced_run(server, followers=2, letter="b"),
    )
    for got, letter in [*((got, "a") for got in first), *((got, "b") for got in second)]:
        expected = "".join(letter * (size // 2) + "x" * (size % 2) for size in SIZES)
        assert joined(got, "stdout") == expected
        assert {event["execution_id"] for event in got} == {got[-1]["execution_id"]}


async def _follow_paced_run(
    server: LiveServer, *, followers: int, letter: str = "é"
) -> list[list[dict[str, Any]]]:
    """The events each of `followers` sockets got of a PACED run printing `letter`s, to
    `finished`."""
    source = PACED.format(sizes=SIZES, letter=letter)
    async with ws_connect(server) as control:
        execution_id = await _run_interactive(control, source)
        watching = [_Follower(server, execution_id) for _ in range(followers)]
        tasks = [asyncio.create_task(follower.follow()) for follower in watching]
        try:
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*(follower.running.wait() for follower in watching))
            await control.send({"type": "stdin", "execution_id": execution_id, "data": "go\n"})
            async with asyncio.timeout(TIMEOUT):
                return await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()


async def _run_interactive(control: Socket, source: str) -> str:
    """Run python `source` (which waits for a line of stdin first); return the execution id."""
    created = await control.request({"type": "create", "language": "python", "source_code": source})
    queued = await control.request(
        {"type": "run", "session_id": created["session"]["id"], "interactive": True}
    )
    return str(queued["execution_id"])


def _relay_written(server: LiveServer) -> float:
    with server.client() as client:
        answer = client.get("/metrics")
    answer.raise_for_status()
    (family,) = (
        f for f in text_string_to_metric_families(answer.text) if f.name == "livecode_relay_written"
    )
    return family.samples[0].value


class _Follower:
    """A socket that subscribes and reads every event to `finished`."""

    def __init__(self, server: LiveServer, execution_id: str) -> None:
        self.server = server
        self.execution_id = execution_id
        self.running = asyncio.Event()
        self.printed_all = asyncio.Event()

    async def follow(self) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with ws_connect(self.server) as ws:
            await ws.send({"type": "subscribe", "execution_id": self.execution_id})
            while True:
                event = await ws.recv()
                got.append(event)
                if event.get("status") == "RUNNING":
                    self.running.set()
                elif event["type"] == "output" and LAST_LINE in event["data"]:
                    self.printed_all.set()
                elif event["type"] == "finished":
                    return got
                elif event["type"] == "error":
                    raise AssertionError(event)


async def _stalled_follower(server: LiveServer, execution_id: str) -> socket.socket:
    """A raw socket subscribed to the execution, with a 4 KB receive buffer nobody reads."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.setblocking(False)
    host, port = server.url.removeprefix("http://").split(":")
    await loop.sock_connect(sock, (host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = (
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, upgrade.encode())
    response = b""
    while b"\r\n\r\n" not in response:  # byte by byte: nothing after the response is read
        response += await loop.sock_recv(sock, 1)
    assert response.startswith(b"HTTP/1.1 101"), response
    payload = json.dumps({"type": "subscribe", "execution_id": execution_id}).encode()
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    await loop.sock_sendall(sock, bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    return sock


async def _read_until_finished(sock: socket.socket) -> list[dict[str, Any]]:
    """Read the raw socket's text frames up to `finished`."""
    loop = asyncio.get_running_loop()
    buffer = b""

    async def take(size: int) -> bytes:
        nonlocal buffer
        while len(buffer) < size:
            data = await loop.sock_recv(sock, 65536)
            assert data, "the server closed the stalled follower's socket"
            buffer += data
        taken, buffer = buffer[:size], buffer[size:]
        return taken

    got: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while not got or got[-1]["type"] != "finished":
                opcode, length = await take(2)
                length &= 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", await take(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", await take(8))
                payload = await take(length)
                if opcode & 0x0F == 1:
                    got.append(json.loads(payload))
    finally:
        sock.close()
    return got


def test_a_shared_event_is_sent_as_the_same_text_as_a_plain_one() -> None:
    """The relay's events, encoded once for all their followers, read as any other event."""
    event = events.output_event("e1", "stdout", 7, 'héllo \u2603 "quoted"\n')
    shared = events.SharedEvent(event)
    assert (
        events.encode(shared)
        == events.encode(event)
        == json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    )
    assert events.encode(shared) is events.encode(shared)  # encoded once
    assert shared == event and json.loads(events.encode(shared)) == event
