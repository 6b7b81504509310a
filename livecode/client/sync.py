"""Client: the WebSocket protocol from plain threads, over a socket of its own (wire.py).

::

    from livecode.client import Client

    with Client("http://127.0.0.1:8000") as client:
        session = client.create_session("python", "print(input()[::-1])")
        run = client.run(session.id, stdin="olleh")
        for event in run:              # Status, Output (as the program writes it), Finished
            print(event)
        print(run.result.stdout)       # 'hello\\n'

One socket carries every call, and a thread of the client reads it. When the socket drops, that
thread opens it again (for up to `reconnect_timeout_s`) and subscribes every unfinished run
again with `since`: each run's events still come once each, in order, none missing.

Thread-safe: any thread may call any method, e.g. one forwarding stdin while another reads a
run's events (one thread per run reads its events).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from queue import Empty, SimpleQueue
from types import TracebackType

from livecode.client import rest, wire
from livecode.client.errors import ConnectionLost, logger
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

# typing costs `livecode run` 3 ms of start, and type checkers read this constant as its own.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Client", "Run"]

_OPENING_ERRORS = (OSError, EOFError, wire.ProtocolError, wire.Refused)
# Put in a run's inbox by Run.interrupt(): events() raises KeyboardInterrupt there, once.
_INTERRUPT = KeyboardInterrupt()


class Client:
    """A connection to one livecode server; opens its socket on first use (or `with`)."""

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
        self._lock = threading.Lock()  # guards _state; never held while waiting on the network
        self._send_lock = threading.Lock()  # one sender at a time; held to swap the socket
        self._connection: wire.Connection | None = None
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def url(self) -> str:
        """The WebSocket URL this client talks to."""
        return self._where.websocket

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Open the socket now. Idempotent.

        Raises:
            ConnectionLost: the server cannot be reached.
            LivecodeError: the server refused the socket (e.g. Unauthorized for a bad key).
        """
        with self._send_lock:
            if self._connection is not None:
                return
            if self._closing.is_set():
                raise RuntimeError("Client.connect() called after close()")
            try:
                connection = self._open()
            except _OPENING_ERRORS as exc:
                raise opening_error(exc, self.url)[0] from exc
            self._attach(connection)
        self._reader = threading.Thread(
            target=self._read, args=(connection,), name="livecode-client", daemon=True
        )
        self._reader.start()

    def close(self) -> None:
        """Close the socket; calls still waiting raise ConnectionLost. Idempotent."""
        self._closing.set()
        with self._send_lock:
            connection = self._connection
        if connection is not None:
            connection.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(self.timeout_s)
        with self._lock:
            if self._state.failure is None:
                self._state.fail(ConnectionLost("the client is closed"))

    # sessions

    def create_session(self, language: str, source_code: str = "") -> Session:
        """Create a session (a language id or alias); this socket follows it."""
        message = {"type": "create", "language": language, "source_code": source_code}
        return Session.from_json(self._call(message, is_idempotent=False)["session"])

    def open_session(self, session_id: str) -> Session:
        """The session as last saved; this socket follows it."""
        message = {"type": "open", "session_id": session_id}
        return Session.from_json(self._call(message, is_idempotent=True)["session"])

    def autosave(self, session_id: str, source_code: str, base_version: int | None = None) -> Saved:
        """Save the source; returns once committed. Raises Conflict if `base_version` is stale."""
        answer = self._call(
            autosave_message(session_id, source_code, base_version), is_idempotent=False
        )
        return Saved(answer["session_id"], answer["version"], answer.get("updated_at"))

    # executions

    def run(
        self,
        session_id: str,
        *,
        stdin: str | None = None,
        args: Sequence[str] = (),
        limits: Limits | None = None,
        interactive: bool = False,
    ) -> Run:
        """Queue a run of the session's source; iterate the Run for its events."""
        inbox: SimpleQueue[Event | BaseException] = SimpleQueue()
        message = run_message(session_id, stdin, args, limits, interactive)
        answer = self._call(message, is_idempotent=False, inbox=inbox)
        return Run(self, answer["execution_id"], inbox)

    def execute(
        self,
        language: str,
        source_code: str,
        *,
        stdin: str | None = None,
        args: Sequence[str] = (),
        limits: Limits | None = None,
    ) -> Execution:
        """Run a source in a new session and return the final execution."""
        session = self.create_session(language, source_code)
        return self.run(session.id, stdin=stdin, args=args, limits=limits).wait()

    def subscribe(self, execution_id: str, since: int = 0) -> Run:
        """Follow an execution from output seq `since` on (0: from its start)."""
        inbox: SimpleQueue[Event | BaseException] = SimpleQueue()
        with self._lock:
            self._state.follow(execution_id, inbox, since)
        message = {"type": "subscribe", "execution_id": execution_id, "since": since}
        try:
            self._call(message, is_idempotent=True, is_silent=True)
        except BaseException:
            with self._lock:
                self._state.forget(execution_id)
            raise
        return Run(self, execution_id, inbox)

    def send_stdin(self, execution_id: str, data: str, *, eof: bool = False) -> None:
        """Write to an interactive run's stdin (and close it with `eof`); returns once taken."""
        message = {"type": "stdin", "execution_id": execution_id, "data": data, "eof": eof}
        self._call(message, is_idempotent=False, is_silent=True)

    def cancel(self, execution_id: str) -> None:
        """Ask for the run to end as CANCELLED (its `finished` event tells when it has)."""
        message = {"type": "cancel", "execution_id": execution_id}
        self._call(message, is_idempotent=True, is_silent=True)

    def ping(self) -> None:
        """One round trip to the server."""
        self._call({"type": "ping"}, is_idempotent=True)

    def languages(self) -> list[Language]:
        """The languages the server runs (GET /languages)."""
        return rest.languages(self._where, self.timeout_s)

    # the socket

    def _call(self, message: dict[str, Any], **options: Any) -> dict[str, Any]:
        if self._connection is None:
            self.connect()
        waiter = _Reply()
        with self._lock:
            frames = self._state.request(message, waiter, **options)
            generation = self._state.generation
        if frames:
            self._send(generation, frames)
        if not waiter.wait(self.timeout_s):
            raise TimeoutError(f"no answer to {message['type']!r} within {self.timeout_s:g} s")
        return waiter.result()

    def _open(self) -> wire.Connection:
        return wire.connect(self.url, self._where.headers, self.timeout_s)

    def _attach(self, connection: wire.Connection) -> None:
        """Make `connection` the socket, then send what waited for one. Holds _send_lock."""
        with self._lock:
            frames = self._state.connected()
            self._connection = connection
        _send_frames(connection, frames)

    def _send(self, generation: int, frames: list[str]) -> None:
        with self._send_lock:
            # A socket opened since: connected() resent these frames, or failed their callers.
            if self._connection is not None and generation == self._state.generation:
                _send_frames(self._connection, frames)

    def _send_later(self, resend: Resend) -> None:
        # From another thread, even without a delay: the reader must never wait on a send.
        timer = threading.Timer(resend.delay_s, self._send, (resend.generation, resend.frames))
        timer.daemon = True
        timer.start()

    def _read(self, connection: wire.Connection) -> None:
        """The reader thread: dispatch every frame; when the socket closes, open it again."""
        while True:
            try:
                for text in connection:  # until the socket closes, however it does
                    try:
                        with self._lock:
                            resend = self._state.receive(text)
                    except (ValueError, KeyError, TypeError):
                        logger(__name__).warning(
                            "livecode client: a frame not understood: %.200s", text
                        )
                        continue
                    if resend is not None:
                        self._send_later(resend)
            except Exception:
                logger(__name__).exception("livecode client: reading %s failed", self.url)
                connection.close()
            with self._lock:
                self._state.disconnected()
            if self._closing.is_set():
                return
            code, reason = connection.close_code, connection.close_reason
            if is_for_good(code):
                self._fail(closed_error(self.url, code, reason))
                return
            logger(__name__).info(
                "livecode client: socket closed (%s %s); reconnecting", code, reason
            )
            reopened = self._reopen()
            if reopened is None:
                return
            connection = reopened

    def _reopen(self) -> wire.Connection | None:
        deadline = time.monotonic() + self.reconnect_timeout_s
        for delay_s in reconnect_delays():
            if self._closing.wait(delay_s):
                return None
            try:
                connection = self._open()
            except _OPENING_ERRORS as exc:
                error, is_worth_retrying = opening_error(exc, self.url)
                if not is_worth_retrying or time.monotonic() >= deadline:
                    self._fail(error)
                    return None
                continue
            with self._send_lock:
                if self._closing.is_set():
                    connection.close()
                    return None
                self._attach(connection)
            return connection
        raise AssertionError("reconnect_delays() never ends")

    def _fail(self, exc: BaseException) -> None:
        logger(__name__).warning("livecode client: giving up on %s: %s", self.url, exc)
        with self._lock:
            self._state.fail(exc)


class Run:
    """One execution followed by a Client: iterate it for its events, then read `result`."""

    def __init__(
        self, client: Client, execution_id: str, inbox: SimpleQueue[Event | BaseException]
    ) -> None:
        self.execution_id = execution_id
        self.result: Execution | None = None
        self._client = client
        self._inbox = inbox
        self._transcript = Transcript()

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def events(self, timeout_s: float | None = None) -> Iterator[Event]:
        """Each event once, as it comes, ending with Finished (then `result` is set).

        Raises TimeoutError when `timeout_s` passes first, ConnectionLost when the socket is
        gone for good, or the server's error when it cannot follow the execution.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.result is None:
            left_s = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._inbox.get(timeout=left_s)
            except Empty:
                message = f"execution {self.execution_id} did not finish in time"
                raise TimeoutError(message) from None
            if item is _INTERRUPT:
                raise KeyboardInterrupt
            if isinstance(item, BaseException):
                self._inbox.put(item)  # raised again by the next call, too
                raise item
            self._transcript.add(item)
            if isinstance(item, Finished):
                self.result = item.execution
            yield item

    def interrupt(self) -> None:
        """Make events() raise KeyboardInterrupt once, after the events received so far.

        Safe in a signal handler (SimpleQueue.put is reentrant). Python's own SIGINT raises
        wherever the main thread is: between events() taking an event and handing it on, the
        event is lost, and a lost Finished leaves events() waiting for good.
        """
        self._inbox.put(_INTERRUPT)

    def wait(self, timeout_s: float | None = None) -> Execution:
        """Read the remaining events; return the final execution."""
        for _ in self.events(timeout_s):
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

    def send_stdin(self, data: str, *, eof: bool = False) -> None:
        """Write to the program's stdin (runs started with interactive=True)."""
        self._client.send_stdin(self.execution_id, data, eof=eof)

    def close_stdin(self) -> None:
        """Send EOF: the program's next read of stdin ends."""
        self._client.send_stdin(self.execution_id, "", eof=True)

    def cancel(self) -> None:
        """Ask for the run to end as CANCELLED; its Finished event follows."""
        self._client.cancel(self.execution_id)


class _Reply:
    """The answer to one request, for the thread that waits for it: what a
    concurrent.futures.Future would do, without the 8 ms its import (logging) adds to the start
    of `livecode run`."""

    __slots__ = ("_is_set", "_outcome")

    def __init__(self) -> None:
        self._is_set = threading.Event()
        self._outcome: dict[str, Any] | BaseException | None = None

    def done(self) -> bool:
        return self._is_set.is_set()

    def set_result(self, result: dict[str, Any], /) -> None:
        self._outcome = result
        self._is_set.set()

    def set_exception(self, exception: BaseException, /) -> None:
        self._outcome = exception
        self._is_set.set()

    def wait(self, timeout_s: float) -> bool:
        """Whether the answer came within `timeout_s`; if not, a late one is dropped."""
        if self._is_set.wait(timeout_s):
            return True
        self._is_set.set()  # done() from now on: the client state drops the late answer
        return self._outcome is not None

    def result(self) -> dict[str, Any]:
        """The answer, or raise the error it was (call after wait() returned True)."""
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        if self._outcome is None:
            raise RuntimeError("_Reply.result() called before an answer came")
        return self._outcome


def _send_frames(connection: wire.Connection, frames: list[str]) -> None:
    try:
        for frame in frames:
            connection.send(frame)
    except OSError:
        pass  # the reader opens the socket again; connected() resends or fails what was sent
