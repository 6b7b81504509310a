"""A TCP proxy in threads, for tests that drop a client's socket or move it to another server."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator


class Proxy:
    """Forwards every connection made to `url` to the upstream port, until cut."""

    def __init__(self, upstream_port: int, *, lose_replies_to: bytes | None = None) -> None:
        self.upstream_port = upstream_port
        # A request holding these bytes gets no reply: the client's connection is reset when
        # the reply comes, as when a network drops after the server did the work.
        self.lose_replies_to = lose_replies_to
        self.accepted = 0  # connections accepted so far
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Reset every open connection, both ways: no close frame, as when a network drops."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _reset(sock)

    def point_to(self, upstream_port: int) -> None:
        """Send new connections to another server (open ones stay where they are)."""
        self.upstream_port = upstream_port

    def close(self) -> None:
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _reset(client)  # the server is not there: the client sees the refusal
                continue
            with self._lock:
                self.accepted += 1
                self._pairs.append((client, upstream))
            if self.lose_replies_to is None:
                for source, target in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(source, target), daemon=True).start()
            else:
                asked = threading.Event()
                threading.Thread(
                    target=_pipe_watching,
                    args=(client, upstream, self.lose_replies_to, asked),
                    daemon=True,
                ).start()
                threading.Thread(
                    target=_pipe_unless_asked, args=(upstream, client, asked), daemon=True
                ).start()


@contextlib.contextmanager
def proxy_to(upstream_url: str, *, lose_replies_to: bytes | None = None) -> Iterator[Proxy]:
    port = upstream_url.rsplit(":", 1)[1].split("/", 1)[0]
    proxy = Proxy(int(port), lose_replies_to=lose_replies_to)
    try:
        yield proxy
    finally:
        proxy.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)  # pass an orderly end (FIN) on
    except OSError:
        _reset(target)


def _pipe_watching(
    source: socket.socket, target: socket.socket, marker: bytes, seen: threading.Event
) -> None:
    try:
        while data := source.recv(65536):
            if marker in data:
                seen.set()
            target.sendall(data)
    except OSError:
        pass
    _reset(target)


def _pipe_unless_asked(
    source: socket.socket, target: socket.socket, asked: threading.Event
) -> None:
    try:
        while data := source.recv(65536):
            if asked.is_set():
                break
            target.sendall(data)
    except OSError:
        pass
    _reset(target)


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        # Linger 0: close() sends RST at once instead of an orderly FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
