"""/ws: one socket, many sessions and executions (SPEC.md, "WebSocket /ws").

A receive loop parses each frame (protocol.py) and carries it out with a command, in order,
writing its replies; each follow (relay.py) writes its events itself (Connection says why).
A bad message gets an `error` event and the socket stays open; flooding closes it (1008).
A server that shuts down closes every socket with 1001 (going away), so that clients
reconnect, to another server, and resume their follows with `since`.

Keys (auth.py): an upgrade from an Origin that is not allowed is refused (HTTP 403, browser.py).
A socket that needs a key and sent none on its upgrade must send `{type: "auth", token}` first
(within AUTH_TIMEOUT_S); a wrong or missing key, or one revoked while the socket is open, gets an
`error` with code `unauthorized` and then close code 4401 (CLOSE_UNAUTHORIZED: HTTP's 401 in
the range RFC 6455 leaves to applications; 1008 stays for floods, so a client can tell "do not
retry with this key" from "slow down").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from starlette.websockets import WebSocket, WebSocketDisconnect

from livecode import auth, browser, events, logs, metrics, protocol
from livecode.bus import session_channel
from livecode.errors import BadRequest, InternalError, LivecodeError, Unauthorized, Unavailable
from livecode.queue import MOST_RUNS_AFTER_REPLY, runs_after_reply
from livecode.relay import WriteNow
from livecode.services import Services
from livecode.tenants import Tenant
from livecode.wsdirect import DirectWriter

logger = logging.getLogger(__name__)

# Each session.updated carries a whole source (up to LIVECODE_MAX_SOURCE_BYTES): a socket too
# slow for 32 of them is told so, and opening the session again gets it the latest source.
SESSION_FOLLOW_QUEUE_SIZE = 32
POLICY_VIOLATION = 1008
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013
CLOSE_UNAUTHORIZED = 4401
# How long a socket that needs a key may take to send its `auth` message.
AUTH_TIMEOUT_S = 10.0
# As many commands at once as anyio's thread pool runs (Starlette's run_in_threadpool).
COMMAND_THREADS = 40

_P = ParamSpec("_P")
_T = TypeVar("_T")
# Beside the commands, the runs they queued that go on in their threads (runs_after_reply).
_commands_pool = concurrent.futures.ThreadPoolExecutor(
    COMMAND_THREADS + MOST_RUNS_AFTER_REPLY, thread_name_prefix="livecode-ws-command"
)


async def in_thread(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """A socket's command in a thread, in a copy of the caller's context (its log ids).

    Not Starlette's run_in_threadpool: anyio's checkpoints, cancel scopes and capacity limiter
    around each call took as much CPU again as the thread hop itself (issue 14: 67 against
    33 us a call); nor asyncio's run_in_executor, whose concurrent future is chained to the
    loop's through callbacks and locks: the thread settles the loop's future itself. A run
    the command queued in the in-process queue may then go on in this thread
    (queue.runs_after_reply). Cancelling the caller does not wait for the command, which
    completes.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()
    context = contextvars.copy_context()

    def call() -> None:
        with runs_after_reply():
            try:
                result = context.run(function, *args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - raised to the caller
                _settle_soon(loop, future, None, exc)
            else:
                _settle_soon(loop, future, result, None)

    _commands_pool.submit(call)
    return await future


def _settle_soon(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[_T],
    result: _T | None,
    error: BaseException | None,
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[_T], result: _T | None, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


class Sockets:
    """The open sockets of a server, closed with 1001 when it shuts down (app.state.sockets)."""

    def __init__(self) -> None:
        self._open: set[Connection] = set()
        self.is_closing = False

    async def close_all(self) -> None:
        """Close every open socket with 1001; sockets opened from now on are refused."""
        self.is_closing = True
        await asyncio.gather(
            *(connection.close(GOING_AWAY) for connection in list(self._open)),
            return_exceptions=True,
        )

    def add(self, connection: Connection) -> None:
        self._open.add(connection)
        metrics.WEBSOCKETS.inc()

    def discard(self, connection: Connection) -> None:
        if connection in self._open:
            self._open.discard(connection)
            metrics.WEBSOCKETS.dec()


async def websocket_endpoint(websocket: WebSocket) -> None:
    """Serve one client socket until it goes away."""
    services: Services = websocket.app.state.services
    sockets: Sockets = websocket.app.state.sockets
    if not browser.origin_allowed(websocket, services.settings.allowed_origins):
        # Closed before it is accepted: uvicorn answers the upgrade with HTTP 403.
        await websocket.close(code=POLICY_VIOLATION)
        return
    if sockets.is_closing:
        await websocket.close(code=GOING_AWAY)
        return
    await websocket.accept()
    tenant: Tenant | None = websocket.scope.get("livecode.tenant")
    refusal = auth.refusal(websocket)
    if refusal is not None and (
        auth.credential(websocket) is not None or not isinstance(refusal, Unauthorized)
    ):
        # A wrong key (or the store down): say so and go. With no key, `auth` may follow.
        await _refuse(websocket, refusal, None)
        return
    connection = Connection(websocket, services, tenant)
    sockets.add(connection)
    try:
        await connection.serve()
    finally:
        sockets.discard(connection)


async def _refuse(websocket: WebSocket, error: LivecodeError, ref: str | None) -> None:
    """An `error` (unauthorized, or unavailable), then close code 4401 (or 1013)."""
    logger.info("socket refused: %s", error.message)
    await websocket.send_text(events.encode(events.error_event(error, ref=ref)))
    unauthorized = isinstance(error, Unauthorized)
    await websocket.close(
        code=CLOSE_UNAUTHORIZED if unauthorized else TRY_AGAIN_LATER, reason=error.code
    )


class Connection:
    """The state of one socket: what it follows, and the writes to it.

    Every task of the socket (the receive loop's replies, each follow, each session) writes its
    events itself, with no outbox and no send loop between: one task hop less per event, which
    counts when 1,000 sockets follow a run (issue 14, bench/bench_fanout.py). A write is
    whole (uvicorn frames and writes a message without awaiting in between), and it waits only
    while the client's buffer is full: then the follows of a slow socket stop reading their
    relay queues, which fill and re-sync them (relay.py) while every other socket goes on.
    A follow that keeps up has even its live output written without its task: by the relay's
    reader, one frame for all (wsdirect.py).
    """

    def __init__(self, websocket: WebSocket, services: Services, tenant: Tenant | None) -> None:
        self.websocket = websocket
        self.services = services
        self.commands = services.commands
        # None until an `auth` message names a key; its credential is checked again with
        # each message, so a revoked key stops working on open sockets too.
        self.tenant = tenant
        self.credential = auth.credential(websocket) if tenant is not None else None
        self.authenticator: auth.Authenticator = websocket.app.state.authenticator
        # A socket without a tenant must authenticate by then, however many messages it sends.
        self._auth_deadline = asyncio.get_running_loop().time() + AUTH_TIMEOUT_S
        self.id = uuid.uuid4().hex
        # Set when a write failed: the client is gone, or the socket was closed.
        self._is_gone = asyncio.Event()
        # DirectWriter refuses a socket that is closing or gone, as _write finds it: no check
        # of _is_gone on top, in a path taken once per follower per chunk.
        direct = DirectWriter.for_socket(websocket)
        self._write_now: WriteNow | None = direct.write if direct is not None else None
        self.follows: dict[str, asyncio.Task[None]] = {}
        self.sessions: dict[str, asyncio.Task[None]] = {}
        # Flood control: a token bucket refilled at ws_messages_per_s, holding two seconds' worth.
        self._rate = float(services.settings.ws_messages_per_s)
        self._burst = 2 * self._rate
        self._tokens = self._burst
        self._refilled_at = time.monotonic()

    async def serve(self) -> None:
        """Receive and send until the client leaves or a write fails; then clean up."""
        loops = {
            asyncio.create_task(self._receive_loop()),
            asyncio.create_task(self._is_gone.wait()),
        }
        try:
            # A failed write must end the receiver too, or the client could go on sending.
            await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks = [*self.follows.values(), *self.sessions.values(), *loops]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self, code: int) -> None:
        """Close the socket with `code` (the loops end as the client answers)."""
        with contextlib.suppress(Exception):  # already closed by the client
            await self.websocket.close(code=code, reason="server shutting down")

    async def _receive_loop(self) -> None:
        try:
            while True:
                try:
                    if self.tenant is None:
                        async with asyncio.timeout_at(self._auth_deadline):
                            message = await self.websocket.receive()
                    else:  # no deadline: no timeout to set up per message
                        message = await self.websocket.receive()
                except TimeoutError:
                    await _refuse(
                        self.websocket, Unauthorized("no auth message came in time"), None
                    )
                    return
                if message["type"] == "websocket.disconnect":
                    return
                if not self._take_token():
                    logger.warning("socket %s flooded; closing", self.id)
                    await self.websocket.close(code=POLICY_VIOLATION, reason="too many messages")
                    return
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode("utf-8", "replace")
                if not await self._handle(text):
                    return
        except (WebSocketDisconnect, _Gone):
            return

    async def _handle(self, text: str) -> bool:
        """Carry out one message; False when the socket was closed for want of a key."""
        ref = None
        try:
            try:
                message = protocol.parse_message(text)
            except BadRequest:
                if self.tenant is None:  # all it may send is a good `auth`
                    raise Unauthorized(
                        'this server needs an API key: send {"type": "auth", "token": KEY} first'
                    ) from None
                raise
            ref = message.ref
            if isinstance(message, protocol.AuthMessage):
                await self._authenticate(message)
                return True
            if self.tenant is None:
                raise Unauthorized(
                    'this server needs an API key: send {"type": "auth", "token": KEY} first'
                )
            if self.credential is not None:
                # Revoked since? A cache hit costs a dict lookup (auth.KEY_CACHE_TTL_S).
                self.tenant = await self.authenticator.authenticate(self.credential, self.websocket)
            # The model's fields are its __dict__: getattr() of a field the message has not
            # goes through pydantic's __getattr__ and an AttributeError (9 us).
            fields = vars(message)
            with logs.about(
                session_id=fields.get("session_id"), execution_id=fields.get("execution_id")
            ):
                await self._dispatch(message, self.tenant)
        except _Gone:
            raise
        except Unauthorized as exc:
            await _refuse(self.websocket, exc, ref if ref is not None else protocol.ref_of(text))
            return False
        except LivecodeError as exc:
            ref = ref if ref is not None else protocol.ref_of(text)
            await self._send(events.error_event(exc, ref=ref))
        except Exception:
            logger.exception("socket %s: message failed", self.id)
            await self._send(events.error_event(InternalError(), ref=ref))
        return True

    async def _authenticate(self, message: protocol.AuthMessage) -> None:
        """`auth`: the socket acts for that key from now on (a socket keeps one tenant)."""
        credential = auth.Credential.of(message.token)
        tenant = await self.authenticator.authenticate(credential, self.websocket)
        if self.tenant is not None and tenant.owner != self.tenant.owner:
            raise BadRequest("this socket acts for another key already; open a new socket")
        self.tenant = tenant
        self.credential = credential if tenant.is_key else None
        logger.info("socket %s authenticated as %s", self.id, tenant.describe())
        await self._send(events.authenticated(message.ref))

    async def _dispatch(self, message: protocol.ClientMessage, tenant: Tenant) -> None:
        commands = self.commands
        ref = message.ref
        match message:
            case protocol.CreateMessage():
                session = await in_thread(
                    commands.create_session,
                    message.language,
                    message.source_code,
                    tenant=tenant,
                )
                await self._send(events.session_reply("created", ref, session))
                self._follow_session(session.id)
            case protocol.OpenMessage():
                session = await in_thread(commands.open_session, message.session_id, tenant=tenant)
                await self._send(events.session_reply("opened", ref, session))
                self._follow_session(session.id)
            case protocol.AutosaveMessage():
                session = await in_thread(
                    commands.autosave,
                    message.session_id,
                    message.source_code,
                    message.base_version,
                    tenant=tenant,
                    origin=self.id,
                )
                await self._send(events.saved_reply(ref, session))
            case protocol.RunMessage():
                execution = await in_thread(
                    commands.run, message.session_id, message, tenant=tenant
                )
                await self._send(events.queued_reply(ref, execution))
                self._follow(execution.id, 0)
            case protocol.SubscribeMessage():
                await in_thread(commands.get_execution, message.execution_id, tenant=tenant)
                self._follow(message.execution_id, message.since)
            case protocol.UnsubscribeMessage():
                task = self.follows.pop(message.execution_id, None)
                if task is not None:
                    task.cancel()
                else:  # idempotent for one's own; another tenant's is not found
                    await in_thread(commands.get_execution, message.execution_id, tenant=tenant)
                await self._send(events.unsubscribed_reply(ref, message.execution_id))
            case protocol.StdinMessage():
                await in_thread(
                    commands.send_stdin,
                    message.execution_id,
                    message.data,
                    message.eof,
                    tenant=tenant,
                )
            case protocol.ResizeMessage():
                await in_thread(
                    commands.resize, message.execution_id, message.cols, message.rows, tenant=tenant
                )
            case protocol.CancelMessage():
                await in_thread(commands.cancel, message.execution_id, tenant=tenant)
            case protocol.PingMessage():
                await self._send(events.pong(ref))
            case protocol.AuthMessage():
                raise RuntimeError("auth messages are handled before dispatch")

    def _follow(self, execution_id: str, since: int) -> None:
        previous = self.follows.pop(execution_id, None)
        if previous is not None:
            previous.cancel()
        self.follows[execution_id] = asyncio.create_task(self._pump_execution(execution_id, since))

    async def _pump_execution(self, execution_id: str, since: int) -> None:
        # This task's lines; a socket gone ends the follow quietly (serve() ends the rest).
        with logs.about(execution_id=execution_id), contextlib.suppress(_Gone):
            await self._relay_execution(execution_id, since)

    async def _relay_execution(self, execution_id: str, since: int) -> None:
        try:
            assert self.services.relay is not None  # set by the lifespan before any socket
            follow = self.services.relay.follow(execution_id, since, write_now=self._write_now)
            async with follow as stream:
                async for event in stream:
                    if event.get("type") == "error":  # the relay ended this follow: say which
                        event = {**event, "execution_id": execution_id}
                    text = events.encode(event)
                    # Every other follower takes the event first; then the writes of it to all
                    # its followers go out back to back, and the lag from the first follower to
                    # the last is that many writes alone (issue 14: 1,000 followers embedded,
                    # quiet machine: p50 36-59 ms without this yield, 30 with it).
                    await asyncio.sleep(0)
                    await self._write(text)
        except (asyncio.CancelledError, _Gone):
            raise
        except Exception:
            logger.exception("socket %s: following %s failed", self.id, execution_id)
            lost = Unavailable(
                f"lost the event stream of execution {execution_id}; subscribe again with since"
            )
            await self._send(events.error_event(lost, execution_id=execution_id))
        finally:
            if self.follows.get(execution_id) is asyncio.current_task():
                del self.follows[execution_id]

    def _follow_session(self, session_id: str) -> None:
        if session_id not in self.sessions:
            self.sessions[session_id] = asyncio.create_task(self._pump_session(session_id))

    async def _pump_session(self, session_id: str) -> None:
        try:
            assert self.services.relay is not None
            listen = self.services.relay.listen(
                session_channel(session_id), queue_size=SESSION_FOLLOW_QUEUE_SIZE
            )
            async with listen as stream:
                async for event in stream:
                    if event.get("origin") == self.id:
                        continue  # the saving socket got `saved`; others get the update
                    if event.get("type") == "error":  # e.g. too slow: which follow it ended
                        event = {**event, "session_id": session_id}
                    await self._send({k: v for k, v in event.items() if k != "origin"})
        except asyncio.CancelledError:
            raise
        except _Gone:
            return
        except Exception:
            logger.exception("socket %s: following session %s failed", self.id, session_id)
        finally:
            # Ended (too slow, or failed): opening the session again follows it anew.
            if self.sessions.get(session_id) is asyncio.current_task():
                del self.sessions[session_id]

    async def _send(self, event: Mapping[str, Any]) -> None:
        if event.get("ref", "") is None:  # a ref is echoed only when the message had one
            event = {key: value for key, value in event.items() if key != "ref"}
        await self._write(events.encode(event))

    async def _write(self, text: str) -> None:
        """Send one encoded event; raises _Gone (and ends the socket) when it cannot."""
        if self._is_gone.is_set():
            raise _Gone()
        try:
            await self.websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            # Disconnected, or closed by another task (a refusal, a shutdown): not sent.
            self._is_gone.set()
            raise _Gone() from exc

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled_at) * self._rate)
        self._refilled_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class _Gone(Exception):
    """A write to the socket failed: the client left or the socket is closed."""
