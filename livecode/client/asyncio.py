"""AsyncClient: the WebSocket protocol from an asyncio program, over websockets' asyncio client.

::

    from livecode.client import AsyncClient

    async with AsyncClient("http://127.0.0.1:8000") as client:
        session = await client.create_session("python", "print(input()[::-1])")
        run = await client.run(session.id, stdin="olleh")
        async for event in run:        # Status, Output (as the program writes it), Finished
            print(event)
        print(run.result.stdout)       # 'hello\\n'

The same calls as `Client` (sync.py), awaited, and the same reconnects: a task of the client
reads the socket, opens it again when it drops and resumes every unfinished run with `since`.
Use one AsyncClient from one event loop; any number of tasks may call it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from livecode.client import rest
from livecode.client.errors import ConnectionLost
from livecode.client.models import Event, Execution, Finished, Language, Limits, Saved, Session
from livecode.client.state import (
    ClientState,
    Resend,
    Transcript,
    autosave_message,
    closed_error,
    is_for_good,
    opening_error,
    reconnect_delays,
    run_message,
)

__all__ = ["AsyncClient", "AsyncRun"]

logger = logging.getLogger(__name__)

_OPENING_ERRORS = (OSError, WebSocketException, EOFError, TimeoutError)


class AsyncClient:
    """A connection to one livecode server; opens its socket on first use (or `async with`)."""

    def __init__(
        self,
        server: str = rest.DEFAULT_SERVER,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        reconnect_timeout_s: float = 30.0,
    ) -> None:
        self._where = rest.endpoints(server, api_key)
        self.timeout_s = timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self._state = ClientState()
        self._send_lock = asyncio.Lock()  # one sender at a time; held to swap the socket
        self._connection: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._is_closing = False

    @property
    def url(self) -> str:
        """The WebSocket URL this client talks to."""
        return self._where.websocket

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the socket now. Idempotent. Raises ConnectionLost, or the server's refusal."""
        async with self._send_lock:
            if self._connection is not None:
                return
            if self._is_closing:
                raise RuntimeError("AsyncClient.connect() called after close()")
            try:
                connection = await self._open()
            except _OPENING_ERRORS as exc:
                raise opening_error(exc, self.url)[0] from exc
            await self._attach(connection)
        self._reader = asyncio.create_task(self._read(connection), name="livecode-client")

    async def close(self) -> None:
        """Close the socket; calls still waiting raise ConnectionLost. Idempotent."""
        self._is_closing = True
        if self._connection is not None:
            await self._connection.close()
        tasks = [*self._tasks, *([self._reader] if self._reader is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._state.failure is None:
            self._state.fail(ConnectionLost("the client is closed"))

    # sessions

    async def create_session(self, language: str, source_code: str = "") -> Session:
        """Create a session (a language id or alias); this socket follows it."""
        message = {"type": "create", "language": language, "source_code": source_code}
        return Session.from_json((await self._call(message, is_idempotent=False))["session"])

    async def open_session(self, session_id: str) -> Session:
        """The session as last saved; this socket follows it."""
        message = {"type": "open", "session_id": session_id}
        return Session.from_json((await self._call(message, is_idempotent=True))["session"])

    async def autosave(
        self, session_id: str, source_code: str, base_version: int | None = None
    ) -> Saved:
        """Save the source; returns once committed. Raises Conflict if `base_version` is stale."""
        answer = await self._call(
            autosave_message(session_id, source_code, base_version), is_idempotent=False
        )
        return Saved(answer["session_id"], answer["version"], answer.get("updated_at"))

    # executions

    async def run(
        self,
        session_id: str,
        *,
        stdin: str | None = None,
        args: Sequence[str] = (),
        limits: Limits | None = None,
        interactive: bool = False,
    ) -> AsyncRun:
        """Queue a run of the session's source; iterate the AsyncRun for its events."""
        inbox: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        message = run_message(session_id, stdin, args, limits, interactive)
        answer = await self._call(message, is_idempotent=False, inbox=inbox)
        return AsyncRun(self, answer["execution_id"], inbox)

    async def execute(
        self,
        language: str,
        source_code: str,
        *,
        stdin: str | None = None,
        args: Sequence[str] = (),
        limits: Limits | None = None,
    ) -> Execution:
        """Run a source in a new session and return the final execution."""
        session = await self.create_session(language, source_code)
        run = await self.run(session.id, stdin=stdin, args=args, limits=limits)
        return await run.wait()

    async def subscribe(self, execution_id: str, since: int = 0) -> AsyncRun:
        """Follow an execution from output seq `since` on (0: from its start)."""
        inbox: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._state.follow(execution_id, inbox, since)
        message = {"type": "subscribe", "execution_id": execution_id, "since": since}
        try:
            await self._call(message, is_idempotent=True, is_silent=True)
        except BaseException:
            self._state.forget(execution_id)
            raise
        return AsyncRun(self, execution_id, inbox)

    async def send_stdin(self, execution_id: str, data: str, *, eof: bool = False) -> None:
        """Write to an interactive run's stdin (and close it with `eof`); returns once taken."""
        message = {"type": "stdin", "execution_id": execution_id, "data": data, "eof": eof}
        await self._call(message, is_idempotent=False, is_silent=True)

    async def cancel(self, execution_id: str) -> None:
        """Ask for the run to end as CANCELLED (its `finished` event tells when it has)."""
        message = {"type": "cancel", "execution_id": execution_id}
        await self._call(message, is_idempotent=True, is_silent=True)

    async def ping(self) -> None:
        """One round trip to the server."""
        await self._call({"type": "ping"}, is_idempotent=True)

    async def languages(self) -> list[Language]:
        """The languages the server runs (GET /languages, in a thread)."""
        return await asyncio.to_thread(rest.languages, self._where, self.timeout_s)

    # the socket

    async def _call(self, message: dict[str, Any], **options: Any) -> dict[str, Any]:
        if self._connection is None:
            await self.connect()
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        frames = self._state.request(message, waiter, **options)
        if frames:
            await self._send(self._state.generation, frames)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await waiter
        except TimeoutError:
            raise TimeoutError(
                f"no answer to {message['type']!r} within {self.timeout_s:g} s"
            ) from None

    async def _open(self) -> ClientConnection:
        return await connect(
            self.url,
            additional_headers=self._where.headers,
            compression=None,  # the server turns it down: events are small, latency counts
            open_timeout=self.timeout_s,
            max_size=None,  # a `finished` event holds whole outputs, bounded by the server
        )

    async def _attach(self, connection: ClientConnection) -> None:
        """Make `connection` the socket, then send what waited for one. Holds _send_lock."""
        frames = self._state.connected()
        self._connection = connection
        await _send_frames(connection, frames)

    async def _send(self, generation: int, frames: list[str]) -> None:
        async with self._send_lock:
            # A socket opened since: connected() resent these frames, or failed their callers.
            if self._connection is not None and generation == self._state.generation:
                await _send_frames(self._connection, frames)

    def _send_later(self, resend: Resend) -> None:
        async def send() -> None:
            await asyncio.sleep(resend.delay_s)
            await self._send(resend.generation, resend.frames)

        task = asyncio.create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, connection: ClientConnection) -> None:
        """The reader task: dispatch every frame; when the socket closes, open it again."""
        while True:
            try:
                async for text in connection:
                    try:
                        resend = self._state.receive(text)
                    except (ValueError, KeyError, TypeError):
                        logger.warning("livecode client: a frame not understood: %.200r", text)
                        continue
                    if resend is not None:
                        self._send_later(resend)
            except ConnectionClosed:
                pass
            except Exception:
                logger.exception("livecode client: reading %s failed", self.url)
                await connection.close()
            self._state.disconnected()
            if self._is_closing:
                return
            code, reason = connection.close_code, connection.close_reason
            if is_for_good(code):
                self._fail(closed_error(self.url, code, reason))
                return
            logger.info("livecode client: socket closed (%s %s); reconnecting", code, reason)
            reopened = await self._reopen()
            if reopened is None:
                return
            connection = reopened

    async def _reopen(self) -> ClientConnection | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout_s
        for delay_s in reconnect_delays():
            await asyncio.sleep(delay_s)
            try:
                connection = await self._open()
            except _OPENING_ERRORS as exc:
                error, is_worth_retrying = opening_error(exc, self.url)
                if not is_worth_retrying or loop.time() >= deadline:
                    self._fail(error)
                    return None
                continue
            async with self._send_lock:
                await self._attach(connection)
            return connection
        raise AssertionError("reconnect_delays() never ends")

    def _fail(self, exc: BaseException) -> None:
        logger.warning("livecode client: giving up on %s: %s", self.url, exc)
        self._state.fail(exc)


class AsyncRun:
    """One execution followed by an AsyncClient: iterate it for its events, then read `result`."""

    def __init__(
        self,
        client: AsyncClient,
        execution_id: str,
        inbox: asyncio.Queue[Event | BaseException],
    ) -> None:
        self.execution_id = execution_id
        self.result: Execution | None = None
        self._client = client
        self._inbox = inbox
        self._transcript = Transcript()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    async def events(self) -> AsyncIterator[Event]:
        """Each event once, as it comes, ending with Finished (then `result` is set).

        Raises ConnectionLost when the socket is gone for good, or the server's error when it
        cannot follow the execution. Bound the wait with `asyncio.timeout()`.
        """
        while self.result is None:
            item = await self._inbox.get()
            if isinstance(item, BaseException):
                self._inbox.put_nowait(item)  # raised again by the next call, too
                raise item
            self._transcript.add(item)
            if isinstance(item, Finished):
                self.result = item.execution
            yield item

    async def wait(self) -> Execution:
        """Read the remaining events; return the final execution."""
        async for _ in self.events():
            pass
        assert self.result is not None
        return self.result

    @property
    def stdout(self) -> str:
        """Output read so far, joined (the last attempt's, like the stored output)."""
        return self._transcript.text("stdout")

    @property
    def stderr(self) -> str:
        return self._transcript.text("stderr")

    @property
    def compile_output(self) -> str:
        return self._transcript.text("compile")

    async def send_stdin(self, data: str, *, eof: bool = False) -> None:
        """Write to the program's stdin (runs started with interactive=True)."""
        await self._client.send_stdin(self.execution_id, data, eof=eof)

    async def close_stdin(self) -> None:
        """Send EOF: the program's next read of stdin ends."""
        await self._client.send_stdin(self.execution_id, "", eof=True)

    async def cancel(self) -> None:
        """Ask for the run to end as CANCELLED; its Finished event follows."""
        await self._client.cancel(self.execution_id)


async def _send_frames(connection: ClientConnection, frames: list[str]) -> None:
    try:
        for frame in frames:
            await connection.send(frame)
    except ConnectionClosed:
        pass  # the reader opens the socket again; connected() resends or fails what was sent
