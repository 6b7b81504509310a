"""livecode.client.wire against a scripted server: the frames uvicorn rarely sends, and refusals.

The end-to-end tests (test_client.py, test_cli_run.py) run it against uvicorn; these cover
fragments, control frames between them, pings both ways, closes, bad answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from livecode.client import wire
from livecode.client.errors import InternalError, Unauthorized, Unavailable
from livecode.client.state import opening_error
from tests.utils import TIMEOUT

Script = Callable[[socket.socket], None]


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A server frame (unmasked)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    if len(payload) < 1 << 16:
        return head + bytes([126]) + struct.pack("!H", len(payload)) + payload
    return head + bytes([127]) + struct.pack("!Q", len(payload)) + payload


def read_client_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One frame from the client, unmasked (it must be masked)."""
    first, second = recv_exactly(sock, 2)
    assert second & 0x80, "client frames are masked"
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", recv_exactly(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", recv_exactly(sock, 8))
    mask = recv_exactly(sock, 4)
    data = recv_exactly(sock, length)
    return first & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the client closed the connection"
        data += chunk
    return data


def accept_handshake(sock: socket.socket, answer: bytes | None = None) -> dict[str, str]:
    """Read the client's upgrade request and answer 101 (or `answer`); return its headers."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += sock.recv(4096)
    lines = request.decode().split("\r\n")
    headers = {
        k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
    }
    if answer is None:
        key = headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + wire._GUID).digest()).decode()
        answer = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
    sock.sendall(answer)
    return {"path": lines[0].split()[1], **headers}


@contextmanager
def scripted_server(script: Script) -> Iterator[str]:
    """A one-connection server running `script` on the accepted socket; yields its ws:// URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    failures: list[BaseException] = []

    def serve() -> None:
        with listener:
            sock, _ = listener.accept()
            with sock:
                try:
                    script(sock)
                except BaseException as exc:
                    failures.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"ws://127.0.0.1:{listener.getsockname()[1]}/ws"
    thread.join(TIMEOUT)
    if failures:
        raise failures[0]


def test_handshake_messages_both_ways_and_a_clean_close() -> None:
    """Headers go out; a fragmented message with a ping between its fragments arrives whole,
    the ping is answered; a message of 70 000 bytes both ways; the server's close ends it."""
    big = "é" * 35_000

    def script(sock: socket.socket) -> None:
        headers = accept_handshake(sock)
        assert headers["authorization"] == "Bearer k" and headers["path"] == "/ws"
        sock.sendall(frame(0x1, b'{"a": "he', fin=False) + frame(0x9, b"hi") + frame(0x0, b'llo"}'))
        assert read_client_frame(sock) == (0xA, b"hi")  # the pong
        assert read_client_frame(sock) == (0x1, json.dumps({"echo": big}).encode())
        sock.sendall(frame(0x1, json.dumps({"big": big}).encode()))
        sock.sendall(frame(0x8, struct.pack("!H", 1012) + b"restart"))
        assert read_client_frame(sock) == (0x8, struct.pack("!H", 1012))  # the close echoed

    with scripted_server(script) as url:
        connection = wire.connect(url, {"Authorization": "Bearer k"}, TIMEOUT)
        received = []
        for text in connection:
            received.append(json.loads(text))
            if len(received) == 1:
                connection.send(json.dumps({"echo": big}))
    assert received == [{"a": "hello"}, {"big": big}]
    assert (connection.close_code, connection.close_reason) == (1012, "restart")


def test_a_refusal_keeps_its_status_and_body() -> None:
    """A 401 answer raises Refused with its JSON body, which maps to the server's error."""
    body = json.dumps({"error": {"code": "unauthorized", "message": "bad key"}}).encode()
    answer = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with scripted_server(lambda sock: accept_handshake(sock, answer)) as url:
        with pytest.raises(wire.Refused) as refused:
            wire.connect(url, {}, TIMEOUT)
    assert (refused.value.status, json.loads(refused.value.body)) == (401, json.loads(body))
    error, is_worth_retrying = opening_error(refused.value, url)
    assert isinstance(error, Unauthorized) and error.message == "bad key" and not is_worth_retrying


@pytest.mark.parametrize(
    ("head", "error_class"),
    [
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5", InternalError),
        (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 5", Unavailable),
    ],
)
def test_a_server_that_cannot_take_the_socket_now_is_worth_retrying(
    head: bytes, error_class: type[Exception]
) -> None:
    """500 (shutting down) and 503 answers are worth another try; Retry-After is kept."""
    answer = head + b"\r\n\r\noops!"
    with scripted_server(lambda sock: accept_handshake(sock, answer)) as url:
        with pytest.raises(wire.Refused) as refused:
            wire.connect(url, {}, TIMEOUT)
    error, is_worth_retrying = opening_error(refused.value, url)
    assert is_worth_retrying and type(error) is error_class
    if isinstance(error, Unavailable):
        assert error.retry_after == 7.0


def test_a_101_without_the_right_accept_is_refused() -> None:
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: nope\r\n\r\n"
    with scripted_server(lambda sock: accept_handshake(sock, answer)) as url:
        with pytest.raises(wire.ProtocolError):
            wire.connect(url, {}, TIMEOUT)


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (b"\x81\x85abcd" + bytes(5), 1002),  # a masked frame from the server
        (frame(0x1, b"\xff\xfe"), 1007),  # a text message that is not UTF-8
    ],
)
def test_a_bad_frame_fails_the_connection(bad: bytes, code: int) -> None:
    def script(sock: socket.socket) -> None:
        accept_handshake(sock)
        sock.sendall(bad)
        assert read_client_frame(sock)[0] == 0x8

    with scripted_server(script) as url:
        connection = wire.connect(url, {}, TIMEOUT)
        assert list(connection) == []
    assert connection.close_code == code


def test_a_dropped_connection_is_1006_and_sends_fail() -> None:
    def script(sock: socket.socket) -> None:
        accept_handshake(sock)
        sock.sendall((frame(0x1, b"{}") + frame(0x1, b'{"partial'))[:-3])

    with scripted_server(script) as url:
        connection = wire.connect(url, {}, TIMEOUT)
        assert list(connection) == ["{}"]
    assert connection.close_code == wire.ABNORMAL_CLOSURE
    with pytest.raises(OSError):
        connection.send("{}")


def test_silence_gets_a_ping_and_no_pong_ends_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After PING_INTERVAL_S of silence the client pings; another interval without a frame and
    the connection is dead (1006), also when a frame was half read at the time."""
    monkeypatch.setattr(wire, "PING_INTERVAL_S", 0.2)
    done = threading.Event()

    def script(sock: socket.socket) -> None:
        accept_handshake(sock)
        assert read_client_frame(sock)[0] == 0x9  # ping after silence
        sock.sendall(frame(0xA, b"") + frame(0x1, b'{"n": 1}')[:4])  # pong, then half a frame
        sock.sendall(frame(0x1, b'{"n": 1}')[4:])  # the rest, within the interval
        assert read_client_frame(sock)[0] == 0x9
        done.wait(TIMEOUT)

    with scripted_server(script) as url:
        connection = wire.connect(url, {}, TIMEOUT)
        assert list(connection) == ['{"n": 1}']
        done.set()
    assert (connection.close_code, connection.close_reason) == (1006, "keepalive ping timeout")


def test_close_from_another_thread_waits_for_the_servers_close() -> None:
    def script(sock: socket.socket) -> None:
        accept_handshake(sock)
        opcode, payload = read_client_frame(sock)
        assert (opcode, payload) == (0x8, struct.pack("!H", 1000))
        sock.sendall(frame(0x8, payload))

    with scripted_server(script) as url:
        connection = wire.connect(url, {}, TIMEOUT)
        reader = threading.Thread(target=lambda: list(connection))
        reader.start()
        connection.close()
        reader.join(TIMEOUT)
    assert connection.close_code == 1000 and not reader.is_alive()
