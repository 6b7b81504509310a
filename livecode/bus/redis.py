"""Redis bus: pub/sub between processes and hosts, plus a per-channel history list for replay.

Keys and channels, under a prefix (default `livecode:`):

    {prefix}{channel}            the pub/sub channel
    {prefix}history:{channel}    a list of the kept events, JSON, in publish order, with a TTL
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import hiredis
import redis
import redis.client
import redis.connection
import redis.exceptions

from livecode.bus import (
    CONTROL_PREFIX,
    HISTORY_TTL_S,
    RESYNC,
    BusUnavailable,
    OnMessage,
)

__all__ = ["PackedCommands", "RedisBus", "pack"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "livecode:"
SUBSCRIBE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
# A subscriber's connection silent this long is pinged.
HEALTH_CHECK_S = 30.0
# How long an unsubscribe may wait to go out with the next command (a run's follow ends and the
# next one begins within milliseconds under load: one write for both).
UNSUBSCRIBE_BATCH_S = 0.05
# History reads answered on the subscriber's connection and not yet read: Redis closes a pub/sub
# client whose unread replies pass its limit (client-output-buffer-limit pubsub, 32 MB by
# default), and many followers catching up on long runs at once (a reconnect's RESYNC makes
# every follower do so) would pass it, again at each reconnect. The others wait their turn.
HISTORY_READS_IN_FLIGHT = 8
_NOT_ENOUGH_DATA: Any = object()
_READ_TIMEOUT_S = 1.0
_MAX_BACKOFF_S = 5.0
_REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
# KEYS[1] the history list; ARGV: the pub/sub channel, the event, the history's TTL in ms.
_PUBLISH_KEPT = """
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"""


@contextmanager
def unavailable_on_redis_errors() -> Iterator[None]:
    """Translate Redis connection errors into BusUnavailable."""
    try:
        yield
    except _REDIS_ERRORS as exc:
        # The detail (addresses, errno) goes to the log, not to clients.
        logger.warning("Redis bus unavailable: %s", exc)
        raise BusUnavailable() from exc


class RedisBus:
    """A bus over Redis pub/sub; the history is a list per channel, appended atomically."""

    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, history_ttl_s: float = HISTORY_TTL_S
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._history_ttl_ms = int(history_ttl_s * 1000)
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        # One EVALSHA where MULTI, RPUSH, PEXPIRE, PUBLISH and EXEC were five commands: redis-py
        # packs and parses one, and a run publishes four or more kept events (issue 14).
        self._publish_kept = self._redis.register_script(_PUBLISH_KEPT)
        # A run publishes four or more events (issue 14).
        self._commands = PackedCommands(self._redis, f"{prefix}publisher")
        self._lock = threading.Lock()
        self._control_reader: _ControlReader | None = None

    @property
    def prefix(self) -> str:
        """The prefix of every key and pub/sub channel of this bus."""
        return self._prefix

    def publish(
        self,
        channel: str,
        event: Mapping[str, Any],
        *,
        keep: bool = True,
        keep_for_s: float | None = None,
    ) -> None:
        """Deliver to every subscriber and, with keep=True, append to history (one script,
        atomic as a MULTI is)."""
        data = json.dumps(event, separators=(",", ":"))
        with unavailable_on_redis_errors():
            if not keep:
                self._commands.call_one(pack(b"PUBLISH", self._prefix + channel, data))
                return
            # A rolling safety TTL: the history of an abandoned channel never lives forever.
            ttl_ms = self._history_ttl_ms if keep_for_s is None else int(keep_for_s * 1000)
            keys = [self._history_key(channel)]
            args: list[str | int] = [self._prefix + channel, data, max(ttl_ms, 1)]
            try:
                self._commands.call_one(pack(b"EVALSHA", self._publish_kept.sha, 1, *keys, *args))
            except redis.exceptions.NoScriptError:
                # A Redis that lost its scripts (restarted): the script object loads it again.
                self._publish_kept(keys=keys, args=args)

    def history(self, channel: str) -> list[dict[str, Any]]:
        """Return the kept events of a channel, in publish order."""
        with unavailable_on_redis_errors():
            kept = cast(list[Any], self._redis.lrange(self._history_key(channel), 0, -1))
        return [json.loads(data) for data in kept]

    def expire(self, channel: str, after_s: float) -> None:
        """Drop the channel's history after_s seconds from now."""
        with unavailable_on_redis_errors():
            if after_s <= 0:
                self._redis.delete(self._history_key(channel))
            else:
                self._redis.pexpire(self._history_key(channel), max(int(after_s * 1000), 1))

    @contextmanager
    def listen(self, channel: str, on_message: OnMessage) -> Iterator[None]:
        """Call on_message for each event published on a control channel, from a reader thread.

        Active when entered. One pattern subscription to every control channel serves all
        listens of this process: a worker listens once per execution, and its own SUBSCRIBE,
        UNSUBSCRIBE and thread each time cost more than the rare control message that reaches
        a process which does not run that execution.
        """
        if not channel.startswith(CONTROL_PREFIX):
            raise ValueError(f"RedisBus.listen() serves control channels, not {channel!r}")
        with self._lock:
            if self._control_reader is None:
                self._control_reader = _ControlReader(self, self._url)
                self._control_reader.start()
            reader = self._control_reader
        reader.add(channel, on_message)
        try:
            reader.wait_subscribed(SUBSCRIBE_TIMEOUT_S)
            yield
        finally:
            reader.remove(channel, on_message)

    def subscriber(self) -> _RedisSubscriber:
        """Return a new async Subscriber with its own pub/sub connection."""
        return _RedisSubscriber(self._url, self._prefix)

    def ping(self) -> None:
        """Return when Redis answers; raise BusUnavailable when not."""
        with unavailable_on_redis_errors():
            self._redis.ping()

    def close(self) -> None:
        """Stop the control reader and close the connection pool."""
        with self._lock:
            reader, self._control_reader = self._control_reader, None
        if reader is not None:
            reader.stop()
        self._commands.close()
        self._redis.close()

    def _history_key(self, channel: str) -> str:
        return _history_key(self._prefix, channel)


class PackedCommands:
    """Packed commands sent straight on connections of their own, the idle ones kept here (a
    pop and an append: atomic, so thread-safe). A command so costs about 20 us of CPU where
    the client's pool, retries and script objects cost 42 (issue 14)."""

    def __init__(self, client: redis.Redis, client_name: str) -> None:
        self._client = client
        self._client_name = client_name  # so that CLIENT LIST tells them apart
        # (redis-py's Connection is untyped.)
        self._idle: collections.deque[Any] = collections.deque()

    def call(self, *commands: bytes) -> list[Any]:
        """Send the commands in one write; return their replies, an error reply as its
        exception (as a pipeline's execute(raise_on_error=False) does).

        Sent once, never again on failure: a command may have run in Redis before its reply
        was lost, and Dramatiq's fetch run twice leaves messages held by a live worker for
        good. A connection that went stale while idle (Redis restarted, or closed it) is
        seen before sending, as the client's pool sees it."""
        connection = self._connection()
        try:
            connection.send_packed_command([b"".join(commands)])  # one write, not one a command
            replies = [_reply(connection) for _ in commands]
        except BaseException:
            connection.disconnect()
            raise
        finally:
            self._idle.append(connection)
        return replies

    def _connection(self) -> Any:  # (redis-py's Connection is untyped)
        try:
            connection = self._idle.pop()
        except IndexError:
            pool = self._client.connection_pool
            options = {**pool.connection_kwargs, "client_name": self._client_name}
            return pool.connection_class(**options)
        if _went_stale(connection):
            connection.disconnect()  # it connects again when sending
        return connection

    def call_one(self, command: bytes) -> Any:
        """Send one command; return its reply, or raise its error reply."""
        (reply,) = self.call(command)
        if isinstance(reply, redis.exceptions.ResponseError):
            raise reply
        return reply

    def close(self) -> None:
        while self._idle:
            self._idle.pop().disconnect()


def _went_stale(connection: Any) -> bool:
    """Whether an idle connection has something to read: Redis closed it (or, never here, a
    reply was left unread). One peek, where the client's can_read costs three syscalls."""
    sock = connection._sock
    if sock is None:
        return False
    if isinstance(sock, ssl.SSLSocket):  # (no recv flags on TLS)
        try:
            return bool(connection.can_read())
        except _REDIS_ERRORS:
            return True
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"" at EOF: stale too
    except BlockingIOError:
        return False
    except OSError:
        pass
    return True


def _reply(connection: Any) -> Any:
    try:
        return connection.read_response()
    except redis.exceptions.ResponseError as exc:  # Redis answered: the connection is fine
        return exc


class _ControlReader(threading.Thread):
    """One pattern subscription to the control channels, dispatching to registered listeners.

    After a lost connection it subscribes again and replays each listened channel's history:
    listeners skip by message id what they already had, and get what was sent meanwhile.
    """

    def __init__(self, bus: RedisBus, url: str) -> None:
        super().__init__(name="bus-control-reader", daemon=True)
        self._bus = bus
        # Its own named client, so that CLIENT LIST tells it apart: "{prefix}control-reader".
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=5,
            health_check_interval=30,
            client_name=f"{bus.prefix}control-reader",
        )
        self._pattern = _glob_escape(bus.prefix + CONTROL_PREFIX) + "*"
        self._listeners: dict[str, list[OnMessage]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._stopping = False

    def add(self, channel: str, on_message: OnMessage) -> None:
        with self._lock:
            self._listeners.setdefault(channel, []).append(on_message)

    def remove(self, channel: str, on_message: OnMessage) -> None:
        with self._lock:
            listeners = self._listeners.get(channel, [])
            if on_message in listeners:
                listeners.remove(on_message)
            if not listeners:
                self._listeners.pop(channel, None)

    def wait_subscribed(self, timeout_s: float) -> None:
        """Return once the pattern subscription is active; BusUnavailable if it is not."""
        if not self._subscribed.wait(timeout_s):
            raise BusUnavailable()

    def stop(self) -> None:
        """End the thread; a message on a channel nobody listens to ends its wait at once."""
        self._stopping = True
        self._subscribed.clear()
        with contextlib.suppress(*_REDIS_ERRORS):
            self._client.publish(f"{self._bus.prefix}{CONTROL_PREFIX}reader-stop", b"")
        self.join(_READ_TIMEOUT_S + 1)
        self._client.close()

    def run(self) -> None:
        backoff_s, reconnected = 0.1, False
        while not self._stopping:
            # Only this thread touches its pub/sub connection: redis-py's is not thread-safe.
            pubsub: redis.client.PubSub = self._client.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.psubscribe(self._pattern)  # type: ignore[no-untyped-call]
                _wait_for_subscribe(pubsub, self._pattern, SUBSCRIBE_TIMEOUT_S)
                if reconnected:
                    logger.info("control reader subscribed again; replaying histories")
                    self._replay_histories()
                self._subscribed.set()
                backoff_s = 0.1
                while not self._stopping:
                    message = pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_READ_TIMEOUT_S
                    )
                    if message is not None and message["type"] == "pmessage":
                        self._dispatch(_channel(message), message["data"])
            except Exception as exc:  # Redis errors; a reply we cannot parse alike
                self._subscribed.clear()
                if self._stopping:
                    return
                logger.warning("control reader lost Redis (%s); retrying", exc)
                reconnected = True
                time.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()
        self._subscribed.clear()

    def _dispatch(self, name: str, data: bytes) -> None:
        channel = name.removeprefix(self._bus.prefix)
        with self._lock:
            listeners = list(self._listeners.get(channel, ()))
        if not listeners:
            return  # an execution that runs in another process
        try:
            event = json.loads(data)
        except ValueError:
            logger.warning("dropped a message that is not JSON on %s", channel)
            return
        for on_message in listeners:
            try:
                on_message(event)
            except Exception:
                logger.exception("a listener of %s failed", channel)

    def _replay_histories(self) -> None:
        with self._lock:
            channels = list(self._listeners)
        for channel in channels:
            for event in self._bus.history(channel):
                self._dispatch(self._bus.prefix + channel, json.dumps(event).encode())


def _history_key(prefix: str, channel: str) -> str:
    return f"{prefix}history:{channel}"


def _glob_escape(text: str) -> str:
    """Text matched literally by a Redis glob pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


class _RedisSubscriber:
    """An async subscription on one RESP3 connection of its own, read by the loop itself.

    Pub/sub messages arrive on it as pushes and the history reads are answered on it too, in
    the order they were sent: a history read sent after a subscribe is answered after that
    subscribe took effect. Subscribes and unsubscribes are written as they come, in call order,
    without a task or a lock each; unsubscribes wait (UNSUBSCRIBE_BATCH_S at most) to go out
    with the next command. redis-py's asyncio pub/sub cost about a tenth of a web process's CPU
    a run (a task and a confirmation a subscribe, a read with a timeout a message, a connection
    of a pool a history read; issue 14). Needs Redis 6 or later (RESP3).

    A lost connection is opened again with backoff, subscribes again, and each channel then
    yields a RESYNC marker; a connection silent for HEALTH_CHECK_S is pinged, and closed when
    Redis does not answer.
    """

    def __init__(self, url: str, prefix: str) -> None:
        self._prefix = prefix
        self._raw_prefix = prefix.encode()
        self._address = _Address.from_url(url)
        self._client_name = f"{prefix}subscriber"  # CLIENT LIST tells it apart
        self._connection: _Resp3Connection | None = None
        self._connecting: asyncio.Task[_Resp3Connection] | None = None
        self._maintainer: asyncio.Task[None] | None = None
        # Channels subscribed, or to be once a connection is open.
        self._channels: set[str] = set()
        # Per channel, the subscribes sent and not yet confirmed, oldest first.
        self._waiters: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._resync: set[str] = set()
        # Subscribes (with the prefix) and unsubscribes (without) to send with the next command.
        self._subscribing: list[str] = []
        self._unsubscribing: list[str] = []
        self._send_handle: asyncio.Handle | None = None  # the subscribes' write, at the next turn
        self._flush_handle: asyncio.TimerHandle | None = None  # the unsubscribes', at the latest
        self._events: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._events_waiter: asyncio.Future[None] | None = None
        self._is_closed = False
        # Free at once when a read is free: a follow's subscribe and read still go in one write.
        self._history_reads = asyncio.Semaphore(HISTORY_READS_IN_FLIGHT)

    async def subscribe(self, *channels: str) -> None:
        """Subscribe; returns once Redis confirmed every channel (BusUnavailable otherwise)."""
        if self._is_closed:
            raise RuntimeError("subscribe() called on a closed subscriber")
        await self._ready()
        waiters = [self.subscribe_soon(channel) for channel in channels]
        try:
            await asyncio.wait_for(asyncio.gather(*waiters), SUBSCRIBE_TIMEOUT_S)
        except TimeoutError as exc:
            raise BusUnavailable("Redis bus unavailable: subscribe not confirmed") from exc

    def subscribe_soon(self, channel: str) -> asyncio.Future[None]:
        """Send a subscribe (SubscribesInOrder); the future is done once it is active."""
        if self._is_closed:
            raise RuntimeError("subscribe_soon() called on a closed subscriber")
        if channel in self._unsubscribing:  # not sent yet: it need not be
            self._unsubscribing.remove(channel)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._channels.add(channel)
        self._waiters.setdefault(channel, collections.deque()).append(waiter)
        if self._connection is not None:
            # Sent at the loop's next turn, or with a history read asked for before it: a
            # follow's subscribe and catch-up go in one write.
            self._subscribing.append(self._prefix + channel)
            if self._send_handle is None:
                self._send_handle = asyncio.get_running_loop().call_soon(self._flush)
        else:  # the connection, once open, subscribes to every channel
            self._connect_soon()
            self._maintain()
        return waiter

    @property
    def is_connected(self) -> bool:
        """Whether the connection is open (SubscribesInOrder)."""
        return self._connection is not None

    async def unsubscribe(self, *channels: str) -> None:
        """Unsubscribe from the channels."""
        for channel in channels:
            self.unsubscribe_soon(channel)
        self._flush()

    def unsubscribe_soon(self, channel: str) -> None:
        """Unsubscribe (SubscribesInOrder); sent with the next command, or soon."""
        self._channels.discard(channel)
        self._resync.discard(channel)
        if self._connection is None or self._is_closed:
            # A new connection subscribes only to what is in _channels, once each: its
            # confirmation must not answer this subscribe, but the channel's next one.
            _fail(self._waiters.pop(channel, ()))
            return
        self._unsubscribing.append(channel)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(
                UNSUBSCRIBE_BATCH_S, self._flush_late
            )

    async def history(self, channel: str) -> list[dict[str, Any]]:
        """Return the kept events of a channel, in publish order."""
        async with self._history_reads:
            connection = await self._ready()
            key = _history_key(self._prefix, channel)
            kept = await self._request(connection, pack(b"LRANGE", key, 0, -1))
        return [json.loads(data) for data in kept]

    def __aiter__(self) -> _RedisSubscriber:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        while not self._events:
            if self._is_closed:
                raise StopAsyncIteration
            self._events_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._events_waiter
            finally:
                self._events_waiter = None
        return self._events.popleft()

    async def aclose(self) -> None:
        """Close the subscription and its connection; iteration ends. Idempotent."""
        if self._is_closed:
            return
        self._is_closed = True
        for handle in (self._flush_handle, self._send_handle):
            if handle is not None:
                handle.cancel()
        for task in (self._maintainer, self._connecting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, BusUnavailable):
                    await task
        if self._connection is not None:
            self._connection.close()
        self._fail_waiters()
        self._wake_reader()

    async def _ready(self) -> _Resp3Connection:
        """The open connection; BusUnavailable when one cannot be opened."""
        connection = self._connection
        if connection is not None:
            return connection
        self._maintain()
        return await asyncio.shield(self._connect_soon())

    def _request(self, connection: _Resp3Connection, command: bytes) -> asyncio.Future[Any]:
        """Write a command with a reply, after the subscribes and unsubscribes that wait (one
        write); those are answered by pushes alone, never by a reply to match."""
        return connection.request(self._with_waiting(command))

    def _flush(self) -> None:
        """Write the subscribes and unsubscribes that wait."""
        if self._connection is not None:
            command = self._with_waiting(b"")
            if command:
                # A connection closing: it is opened again, and subscribes to every channel.
                with contextlib.suppress(BusUnavailable):
                    self._connection.write(command)

    def _flush_late(self) -> None:
        self._flush_handle = None
        self._flush()

    def _with_waiting(self, command: bytes) -> bytes:
        if self._send_handle is not None:
            self._send_handle.cancel()
            self._send_handle = None
        if self._flush_handle is not None and self._unsubscribing:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._subscribing and not self._unsubscribing:
            return command
        parts = []
        # Subscribes first: an unsubscribe that waits came after them (one that came before a
        # subscribe of its channel was dropped by that subscribe).
        if self._subscribing:
            parts.append(pack(b"SUBSCRIBE", *self._subscribing))
            self._subscribing.clear()
        if self._unsubscribing:
            channels = [self._prefix + channel for channel in self._unsubscribing]
            parts.append(pack(b"UNSUBSCRIBE", *channels))
            self._unsubscribing.clear()
        parts.append(command)
        return b"".join(parts)

    def _maintain(self) -> None:
        if self._maintainer is None and not self._is_closed:
            self._maintainer = asyncio.create_task(self._keep_open(), name="redis-bus-reader")

    def _connect_soon(self) -> asyncio.Task[_Resp3Connection]:
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect())
            self._connecting.add_done_callback(self._connect_done)
        return self._connecting

    def _connect_done(self, task: asyncio.Task[_Resp3Connection]) -> None:
        self._connecting = None
        if task.cancelled() or task.exception() is not None:
            self._fail_waiters()

    async def _connect(self) -> _Resp3Connection:
        loop = asyncio.get_running_loop()
        connection = None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                connection = await self._address.open(
                    loop, lambda: _Resp3Connection(self._on_push, self._on_lost)
                )
                if self._is_closed:
                    connection.close()
                    raise BusUnavailable()
                self._connection = connection
                # Commands written from now on follow the handshake on the wire; if it fails,
                # the connection is closed and they fail with it.
                replies = [connection.request(self._address.hello(self._client_name))]
                if self._address.db:
                    replies.append(connection.request(pack(b"SELECT", self._address.db)))
                if self._channels:
                    channels = [self._prefix + channel for channel in self._channels]
                    connection.write(pack(b"SUBSCRIBE", *channels))
                await asyncio.gather(*replies)
        except BaseException as exc:
            if connection is not None:
                connection.abort()
                if self._connection is connection:
                    self._connection = None
            if isinstance(exc, (*_REDIS_ERRORS, TimeoutError, hiredis.ReplyError)):
                logger.warning("Redis bus unavailable: %s", exc)
                raise BusUnavailable() from exc
            raise
        return connection

    def _on_lost(self, connection: _Resp3Connection, exc: Exception | None) -> None:
        if self._connection is connection:
            self._connection = None
        self._subscribing.clear()  # a new connection subscribes to every channel
        self._unsubscribing.clear()
        for handle in (self._flush_handle, self._send_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._send_handle = None
        if self._is_closed:
            return
        if self._channels and not self._resync:
            logger.warning("Redis bus connection lost, retrying: %s", exc or "closed by Redis")
        self._resync.update(self._channels)
        self._fail_waiters()

    def _fail_waiters(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for pending in waiters.values():
            _fail(pending)

    async def _keep_open(self) -> None:
        """Open the connection again once lost (with backoff); ping it when silent."""
        backoff_s = 0.1
        while True:
            connection = self._connection
            if connection is None:
                try:
                    await asyncio.shield(self._connect_soon())
                    backoff_s = 0.1
                except BusUnavailable:
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
                continue
            try:
                await asyncio.wait_for(asyncio.shield(connection.closed), HEALTH_CHECK_S)
            except TimeoutError:
                try:
                    async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                        await self._request(connection, pack(b"PING"))
                except (TimeoutError, BusUnavailable, hiredis.ReplyError):
                    logger.warning("Redis bus connection does not answer: closing it")
                    connection.abort()

    def _on_push(self, push: list[Any]) -> None:
        kind = push[0]
        if kind == b"message":
            raw_channel = push[1]
            channel = (
                raw_channel[len(self._raw_prefix) :]
                if raw_channel.startswith(self._raw_prefix)
                else raw_channel
            ).decode()
            if channel not in self._channels:
                return  # unsubscribed; its UNSUBSCRIBE may still be on its way
            try:
                event = json.loads(push[2])
            except ValueError:
                logger.warning("dropped a message that is not JSON on %s", channel)
                return
            self._deliver((channel, event))
        elif kind == b"subscribe":
            channel = push[1].decode().removeprefix(self._prefix)
            pending = self._waiters.get(channel)
            if pending:
                waiter = pending.popleft()
                if not pending:
                    del self._waiters[channel]
                if not waiter.done():
                    waiter.set_result(None)
            if channel in self._resync:
                self._resync.discard(channel)
                if channel in self._channels:
                    logger.info("Redis bus resubscribed to %s", channel)
                    self._deliver((channel, {"type": RESYNC}))

    def _deliver(self, item: tuple[str, dict[str, Any]]) -> None:
        self._events.append(item)
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter = self._events_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Resp3Connection(asyncio.Protocol):
    """One RESP3 connection: each reply answers the oldest request, pushes go to on_push.

    An error reply fails its request and closes the connection: the reply of a command sent
    without a request (a SUBSCRIBE refused by an ACL) would otherwise answer the wrong one.
    """

    def __init__(
        self,
        on_push: Callable[[list[Any]], None],
        on_lost: Callable[[_Resp3Connection, Exception | None], None],
    ) -> None:
        self._on_push = on_push
        self._on_lost = on_lost
        self._reader = hiredis.Reader(notEnoughData=_NOT_ENOUGH_DATA)
        self._requests: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise BusUnavailable()
        self._transport.write(data)

    def request(self, command: bytes) -> asyncio.Future[Any]:
        """Queue a command that has a reply; the caller writes it (with `write`)."""
        if self._transport is None or self._transport.is_closing():
            raise BusUnavailable()
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests.append(reply)
        self._transport.write(command)
        return reply

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError:
                logger.exception("Redis bus: a reply that cannot be parsed")
                self.abort()
                return
            if reply is _NOT_ENOUGH_DATA:
                return
            if type(reply) is hiredis.PushNotification:
                self._on_push(reply)
            elif not self._requests:
                logger.warning("Redis bus: a reply to no request (%r): closing", reply)
                self.abort()
                return
            else:
                request = self._requests.popleft()
                if isinstance(reply, hiredis.ReplyError):
                    if not request.done():
                        request.set_exception(reply)
                    self.abort()
                    return
                if not request.done():
                    request.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        requests, self._requests = self._requests, collections.deque()
        for request in requests:
            if not request.done():
                request.set_exception(BusUnavailable())
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_lost(self, exc)


@dataclasses.dataclass(frozen=True, slots=True)
class _Address:
    """Where a Redis URL points, and how to log in: what the subscriber's connection needs."""

    host: str | None
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None
    ssl: ssl.SSLContext | None

    @classmethod
    def from_url(cls, url: str) -> _Address:
        options = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
        context = None
        connection_class = options.pop("connection_class", None)
        if connection_class is redis.connection.SSLConnection:
            context = _ssl_context(connection_class(**options))  # type: ignore[no-untyped-call]
        return cls(
            host=options.get("host"),
            port=int(options.get("port") or 6379),
            path=options.get("path"),
            db=int(options.get("db") or 0),
            username=options.get("username"),
            password=options.get("password"),
            ssl=context,
        )

    async def open(
        self, loop: asyncio.AbstractEventLoop, factory: Callable[[], _Resp3Connection]
    ) -> _Resp3Connection:
        if self.path is not None:
            _, connection = await loop.create_unix_connection(factory, self.path)
        else:
            _, connection = await loop.create_connection(
                factory, self.host or "localhost", self.port, ssl=self.ssl
            )
        return connection

    def hello(self, client_name: str) -> bytes:
        arguments: list[Any] = [b"HELLO", 3]
        if self.password is not None:
            arguments += [b"AUTH", self.username or "default", self.password]
        return pack(*arguments, b"SETNAME", client_name)


def _ssl_context(options: Any) -> ssl.SSLContext:
    """The TLS of redis-py's connection for the same URL (its `ssl_*` query arguments read as
    redis-py reads them: a CA file, a client certificate, `ssl_cert_reqs`...), as its
    SSLConnection builds it when it connects."""
    context = ssl.create_default_context()
    context.check_hostname = options.check_hostname
    context.verify_mode = options.cert_reqs
    if options.certfile or options.keyfile:
        context.load_cert_chain(
            certfile=options.certfile,
            keyfile=options.keyfile,
            password=options.certificate_password,
        )
    if options.ca_certs is not None or options.ca_path is not None or options.ca_data is not None:
        context.load_verify_locations(
            cafile=options.ca_certs, capath=options.ca_path, cadata=options.ca_data
        )
    if options.ssl_min_version is not None:
        context.minimum_version = options.ssl_min_version
    if options.ssl_ciphers:
        context.set_ciphers(options.ssl_ciphers)
    return context


def _fail(waiters: Iterable[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(BusUnavailable())


def pack(*arguments: Any) -> bytes:
    """A command in RESP, for PackedCommands (and the subscriber's connection)."""
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        data = argument if isinstance(argument, bytes) else str(argument).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def _wait_for_subscribe(pubsub: redis.client.PubSub, name: str, timeout_s: float) -> None:
    """Read until Redis confirms the subscription, so that no later publish is missed.

    What a reused connection still had buffered (its previous channel's last messages and
    unsubscribe confirmation) is read past and dropped.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.0))
        if (
            message is not None
            and message["type"] in ("subscribe", "psubscribe")
            and _channel(message) == name
        ):
            return
    raise BusUnavailable("Redis bus unavailable: subscribe not confirmed")


def _channel(message: dict[str, Any]) -> str:
    channel = message["channel"]
    return channel.decode() if isinstance(channel, bytes) else str(channel)
