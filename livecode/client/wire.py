"""A blocking WebSocket client connection (RFC 6455): what the threading client needs, no more.

Why not websockets' threading client: importing any part of websockets runs
`websockets/version.py`, which imports importlib.metadata (email, zipfile, csv, ...): 65 ms of
the start of `livecode run` on our 2 cores, 28 of them for importlib.metadata alone, when the
whole command must stay within ~100 ms of `python3 hello.py`. This module needs socket,
SHA-1 and base64, and ssl only for wss:// (bench/bench_cli.py has the figures). The asyncio
client, which no command line waits for, uses websockets.

What it does: the opening handshake (Sec-WebSocket-Accept checked, extra headers, any other
answer raised as Refused with its status and body), text messages out (masked, one frame
each) and in (fragments joined, UTF-8 checked), pongs for the server's pings, a ping of its
own after PING_INTERVAL_S of silence (no answer within as long again: the connection is
dead), and the closing handshake. Not: extensions (the server turns compression down),
binary messages (never sent by livecode), proxies from the environment.

Thread-safe: one thread iterates the connection; any thread may send() and close().
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import threading
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

# The interpreter's own SHA-1: hashlib loads OpenSSL first, 3 ms of `livecode run`'s start.
# (typing's TYPE_CHECKING costs 3 ms too; type checkers read this constant as its own.)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from hashlib import sha1
else:
    try:
        from _sha1 import sha1
    except ImportError:  # an interpreter built without it
        from hashlib import sha1

__all__ = ["PING_INTERVAL_S", "Connection", "ProtocolError", "Refused", "connect"]

PING_INTERVAL_S = 20.0
MAX_MESSAGE_BYTES = 1 << 30  # a guard against a corrupt length, not a policy
MAX_HEAD_BYTES = 64 << 10
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING = 0x0, 0x1, 0x2, 0x8, 0x9
_PONG = 0xA
ABNORMAL_CLOSURE = 1006  # no close frame: what websockets and browsers report too


class ProtocolError(Exception):
    """The server broke RFC 6455 (a bad handshake answer or a malformed frame)."""


class Refused(Exception):
    """The server answered the opening handshake with an HTTP status other than 101.

    `headers` has the answer's header names in lower case.
    """

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.body = body


def connect(url: str, headers: Mapping[str, str], timeout_s: float) -> Connection:
    """Open a WebSocket to ws:// or wss:// `url`.

    Raises:
        OSError: the server cannot be reached (TimeoutError when it takes over `timeout_s`).
        Refused: it answered with another HTTP status (401, 403, 500, ...).
        ProtocolError: it answered 101 without a valid handshake.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if secure else 80)
    sock = socket.create_connection((host, port), timeout=timeout_s)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small frames, now
        if secure:
            import ssl

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        connection = Connection(sock)
        connection.handshake(parts.netloc, parts.path or "/", headers)
        sock.settimeout(PING_INTERVAL_S)
        return connection
    except BaseException:
        sock.close()
        raise


class Connection:
    """One open WebSocket. Iterate it for the server's text messages until it closes; then
    `close_code` and `close_reason` say how (1006: without a close frame)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._send_lock = threading.Lock()
        self._closed = threading.Event()  # the closing handshake is over, or the socket died
        self._close_sent = False
        self.close_code: int | None = None
        self.close_reason = ""

    def handshake(self, netloc: str, path: str, headers: Mapping[str, str]) -> None:
        key = base64.b64encode(os.urandom(16))
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key.decode()}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, answer = self._read_head()
        if status != 101:
            length = int(answer.get("content-length", "0") or 0)
            raise Refused(status, answer, self._read_body(min(length, MAX_HEAD_BYTES)))
        accept = base64.b64encode(sha1(key + _GUID).digest()).decode()
        if (
            answer.get("upgrade", "").lower() != "websocket"
            or answer.get("sec-websocket-accept") != accept
        ):
            raise ProtocolError("the server's 101 answer is not a WebSocket handshake")

    def send(self, text: str) -> None:
        """Send one text message. Raises OSError once the connection is closed (or when this
        send fails: then the connection is dropped, as part of a frame may have gone)."""
        try:
            self._send_frame(_TEXT, text.encode())
        except OSError:
            self._abort()
            raise

    def close(self, code: int = 1000, timeout_s: float = 2.0) -> None:
        """Start the closing handshake and wait (up to `timeout_s`) for the server's close,
        which the iterating thread reads; then release the socket. Idempotent."""
        try:
            self._send_close(code)
        except OSError:
            pass
        self._closed.wait(timeout_s)
        self._abort()

    def __iter__(self) -> Iterator[str]:
        is_pinging = False
        parts: list[bytes] = []
        while True:
            try:
                opcode, fin, payload = self._read_frame()
            except TimeoutError:
                if is_pinging:  # a whole interval without a pong: the connection is dead
                    self._abort(ABNORMAL_CLOSURE, "keepalive ping timeout")
                    return
                is_pinging = True
                self._send_quietly(_PING, b"")
                continue
            except (OSError, EOFError):
                self._abort(ABNORMAL_CLOSURE)
                return
            except ProtocolError as exc:
                self._fail(1002, str(exc))
                return
            is_pinging = False
            if opcode == _PING:
                self._send_quietly(_PONG, payload)
            elif opcode == _CLOSE:
                self._on_close(payload)
                return
            elif opcode in (_TEXT, _BINARY, _CONTINUATION):  # (a pong only proves life)
                parts.append(payload)
                if fin:
                    data, parts = b"".join(parts), []
                    try:
                        yield data.decode()
                    except UnicodeDecodeError:
                        self._fail(1007, "invalid UTF-8")
                        return

    # frames

    def _read_frame(self) -> tuple[int, bool, bytes]:
        # Nothing leaves the buffer before the whole frame is in it: a read timeout (the
        # keepalive's) may come at any byte, and the frame goes on after it.
        self._fill(2)
        first, second = self._buffer[0], self._buffer[1]
        if second & 0x80:
            raise ProtocolError("a frame from the server is masked")
        start, length = 2, second & 0x7F
        if length >= 126:
            start = 4 if length == 126 else 10
            self._fill(start)
            (length,) = struct.unpack("!H" if start == 4 else "!Q", self._buffer[2:start])
        if length > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"a frame of {length} bytes")
        self._fill(start + length)
        payload = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        return first & 0x0F, bool(first & 0x80), payload

    def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            chunk = self._sock.recv(max(65536, size - len(self._buffer)))
            if not chunk:
                raise EOFError("the connection was closed")
            self._buffer += chunk

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        with self._send_lock:
            if self._close_sent:
                raise BrokenPipeError("the connection is closing")
            self._sock.sendall(head + mask + _masked(payload, mask))
            if opcode == _CLOSE:
                self._close_sent = True

    def _send_quietly(self, opcode: int, payload: bytes) -> None:
        try:
            self._send_frame(opcode, payload)
        except OSError:
            pass  # the next read finds the connection gone

    def _send_close(self, code: int, reason: str = "") -> None:
        if not self._close_sent:
            self._send_frame(_CLOSE, struct.pack("!H", code) + reason.encode()[:120])

    def _on_close(self, payload: bytes) -> None:
        if len(payload) >= 2:
            (self.close_code,) = struct.unpack("!H", payload[:2])
            self.close_reason = payload[2:].decode("utf-8", "replace")
        else:
            self.close_code = 1005  # no status in the close frame
        try:
            self._send_close(self.close_code if len(payload) >= 2 else 1000)
        except OSError:
            pass
        self._abort(self.close_code, self.close_reason)

    def _fail(self, code: int, reason: str) -> None:
        """Close for a fault of the server's (RFC 6455 7.1.7): say why, then drop the socket."""
        self._send_quietly(_CLOSE, struct.pack("!H", code) + reason.encode()[:120])
        self._abort(code, reason)

    def _abort(self, code: int | None = None, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code or ABNORMAL_CLOSURE, reason
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it
        except OSError:
            pass
        self._sock.close()

    # the opening handshake's HTTP

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise ProtocolError("the handshake answer's head is too large")
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError("the connection was closed during the handshake")
            self._buffer += chunk
        end = self._buffer.index(b"\r\n\r\n")
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        try:
            status = int(head[0].split()[1])
        except (IndexError, ValueError):
            raise ProtocolError(f"not an HTTP answer: {head[0]!r}") from None
        fields = (line.split(":", 1) for line in head[1:] if ":" in line)
        return status, {name.strip().lower(): value.strip() for name, value in fields}

    def _read_body(self, length: int) -> bytes:
        try:
            self._fill(length)
        except (OSError, EOFError):
            pass
        return bytes(self._buffer[:length])


def _masked(payload: bytes, mask: bytes) -> bytes:
    # One big-integer XOR instead of a Python loop: 1 MiB of stdin in about a millisecond.
    if not payload:
        return payload
    length = len(payload)
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
