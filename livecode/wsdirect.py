"""Writing a relayed event straight to a WebSocket's transport: one frame for every follower.

With 1,000 sockets following one run, each chunk cost every follower a task wake-up, the
relay's iterator, Starlette's and uvicorn's sends and websockets' framing: 16-22 us of Python
each, beside the kernel's send (issue 14). A frame from a server is never masked, so it is the
same bytes for every follower: the relay's reader frames an event once and writes it to the
transport of each follower that is idle (relay.Relay.follow's `write_now`).

This reaches past ASGI into uvicorn's websockets-sansio protocol, which server_config names.
`DirectWriter.for_socket` gives None for any other server or protocol, and for a socket with an
extension (permessage-deflate would make a frame per socket): its events go the ASGI way.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from livecode.events import SharedEvent

__all__ = ["DirectWriter", "ServerSend"]

# Where ServerSend keeps, in a WebSocket's scope, the send callable the server gave the app.
_SERVER_SEND: Final = "livecode.server_send"


class ServerSend:
    """ASGI middleware, outermost: keeps the server's own `send` of a WebSocket in its scope.

    The app's sends go through Starlette's wrappers (one per exception-handling layer); the
    server's is a bound method of its protocol, which DirectWriter needs.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        scope[_SERVER_SEND] = send
        try:
            await self.app(scope, receive, send)
        finally:
            # The protocol holds the scope: a cycle that only the collector would break.
            scope.pop(_SERVER_SEND, None)


class DirectWriter:
    """Writes events to one socket's transport, as uvicorn's own send would frame them."""

    __slots__ = ("_protocol", "_websocket")

    def __init__(self, websocket: WebSocket, protocol: WebSocketsSansIOProtocol) -> None:
        self._websocket = websocket
        self._protocol = protocol

    @classmethod
    def for_socket(cls, websocket: WebSocket) -> DirectWriter | None:
        """The socket's writer, or None when its server is not one this can write for."""
        protocol = getattr(websocket.scope.get(_SERVER_SEND), "__self__", None)
        if not isinstance(protocol, WebSocketsSansIOProtocol) or protocol.conn.extensions:
            return None
        return cls(websocket, protocol)

    def write(self, event: SharedEvent) -> bool:
        """Write the event's frame now; False, writing nothing, when the socket cannot take it
        at once (closing, or its buffer above the high-water mark: then the ASGI send waits)."""
        protocol = self._protocol
        if (
            # The app has decided to close (a revoked key, say), though its close frame may
            # still wait for a full buffer: nothing more goes out before it.
            self._websocket.application_state is not WebSocketState.CONNECTED
            or protocol.close_sent
            or protocol.disconnected
            or not protocol.writable.is_set()
            or protocol.conn.state is not State.OPEN
            or protocol.transport.is_closing()
        ):
            return False
        protocol.transport.write(_frames.of(event))
        return True


class _FrameCache:
    """The frame of the last event written: the reader writes one event to all its followers
    before the next, so one entry frames each event once. One tuple, swapped whole: servers
    in threads of one process (tests) share it."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        # The event is held, so that no other event gets its id while it is here.
        self._last: tuple[SharedEvent | None, bytes] = (None, b"")

    def of(self, event: SharedEvent) -> bytes:
        last_event, frame = self._last
        if event is not last_event:
            frame = Frame(Opcode.TEXT, event.text.encode()).serialize(mask=False, extensions=[])
            self._last = (event, frame)
        return frame


_frames: Final = _FrameCache()
