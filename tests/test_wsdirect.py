"""wsdirect: what a closed socket leaves behind."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from livecode import websocket as livecode_websocket
from tests.utils import embedded_settings, run_server, ws_connect

pytestmark = pytest.mark.anyio


async def test_a_closed_socket_is_freed_by_reference_counting(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The server runs its cyclic collector rarely (cli.GC_THRESHOLDS, gc.freeze): a socket
    that is gone must not wait for it. Before wsdirect, its protocol and Connection were freed
    as soon as it closed; ServerSend (scope -> protocol.send -> protocol -> scope) and the
    Connection's write_now (Connection -> lambda -> Connection) put both in cycles."""
    with run_server(embedded_settings(tmp_path_factory)) as server:
        port = int(server.url.rsplit(":", 1)[1])

        def left() -> tuple[int, int]:
            protocols = [
                o
                for o in gc.get_objects()
                if type(o) is WebSocketsSansIOProtocol and o.server and o.server[1] == port
            ]
            connections = [
                o
                for o in gc.get_objects()
                if type(o) is livecode_websocket.Connection
                and o.websocket.scope["server"][1] == port
            ]
            return len(protocols), len(connections)

        gc.collect()
        gc.disable()
        try:
            for _ in range(5):
                async with ws_connect(server) as socket:
                    await socket.request({"type": "ping"})
            deadline = time.monotonic() + 5
            while left() != (0, 0) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert left() == (0, 0), "closed sockets kept alive until the collector runs"
        finally:
            gc.enable()
