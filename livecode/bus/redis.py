"""Redis bus: pub/sub between processes and hosts, plus a per-channel history list for replay.

Keys and channels, under a prefix (default `livecode:`):

    {prefix}{channel}            the pub/sub channel
    {prefix}history:{channel}    a list of the kept events, JSON, in publish order, with a TTL
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import redis
import redis.asyncio
import redis.client
import redis.exceptions

from livecode.bus import (
    CONTROL_PREFIX,
    HISTORY_TTL_S,
    RESYNC,
    BusUnavailable,
    OnMessage,
)

__all__ = ["RedisBus"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "livecode:"
SUBSCRIBE_TIMEOUT_S = 10.0
# Connections of a server's subscriber for history reads (a follow's catch-up).
HISTORY_READERS = 4
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
                self._redis.publish(self._prefix + channel, data)
                return
            # A rolling safety TTL: the history of an abandoned channel never lives forever.
            ttl_ms = self._history_ttl_ms if keep_for_s is None else int(keep_for_s * 1000)
            self._publish_kept(
                keys=[self._history_key(channel)],
                args=[self._prefix + channel, data, max(ttl_ms, 1)],
            )

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
        self._redis.close()

    def _history_key(self, channel: str) -> str:
        return _history_key(self._prefix, channel)


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
    """An async subscription on one pub/sub connection, read by one background task.

    The reader task survives a lost connection: it retries with backoff, redis-py subscribes
    again on reconnect, and each channel then yields a RESYNC marker.
    """

    def __init__(self, url: str, prefix: str) -> None:
        self._prefix = prefix
        client_name = f"{prefix}subscriber"
        # Named, so that CLIENT LIST tells the subscribers apart: "{prefix}subscriber".
        self._redis = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=5, health_check_interval=30, client_name=client_name
        )
        self._pubsub = self._redis.pubsub()
        # History reads on the loop: a thread hop per follow cost more CPU than the LRANGE
        # (issue 14). A few connections of their own, however many sockets follow at once.
        self._history_client = redis.asyncio.Redis(
            connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=HISTORY_READERS,
                timeout=SUBSCRIBE_TIMEOUT_S,
                socket_connect_timeout=5,
                health_check_interval=30,
                client_name=f"{prefix}history-reader",
            )
        )
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self._channels: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._resync: set[str] = set()
        self._reader: asyncio.Task[None] | None = None
        self._is_closed = False

    async def subscribe(self, *channels: str) -> None:
        """Subscribe; returns once Redis confirmed every channel (BusUnavailable otherwise)."""
        if self._is_closed:
            raise RuntimeError("subscribe() called on a closed subscriber")
        loop = asyncio.get_running_loop()
        waiters = []
        for channel in channels:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(channel, []).append(waiter)
            waiters.append(waiter)
        try:
            with unavailable_on_redis_errors():
                await self._pubsub.subscribe(*(self._prefix + channel for channel in channels))
            self._channels.update(channels)
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(), name="redis-bus-reader")
            try:
                await asyncio.wait_for(asyncio.gather(*waiters), SUBSCRIBE_TIMEOUT_S)
            except TimeoutError as exc:
                raise BusUnavailable("Redis bus unavailable: subscribe not confirmed") from exc
        finally:
            for channel, waiter in zip(channels, waiters, strict=True):
                pending = self._waiters.get(channel, [])
                if waiter in pending:
                    pending.remove(waiter)
                if not pending:
                    self._waiters.pop(channel, None)

    async def unsubscribe(self, *channels: str) -> None:
        """Unsubscribe from the channels."""
        self._channels.difference_update(channels)
        self._resync.difference_update(channels)
        if channels and not self._is_closed:
            with unavailable_on_redis_errors():
                await self._pubsub.unsubscribe(*(self._prefix + channel for channel in channels))

    async def history(self, channel: str) -> list[dict[str, Any]]:
        """Return the kept events of a channel, in publish order."""
        with unavailable_on_redis_errors():
            # redis-py types its commands for both clients: this one's answer is awaitable.
            reading = self._history_client.lrange(_history_key(self._prefix, channel), 0, -1)
            kept = await cast(Awaitable[list[bytes]], reading)
        return [json.loads(data) for data in kept]

    def __aiter__(self) -> _RedisSubscriber:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # every later __anext__ ends too
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Close the subscription and its connection; iteration ends. Idempotent."""
        if self._is_closed:
            return
        self._is_closed = True
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
        try:
            await self._pubsub.aclose()
            await self._redis.aclose()
            await self._history_client.aclose()
        except _REDIS_ERRORS:
            logger.debug("error while closing the Redis subscriber", exc_info=True)
        self._queue.put_nowait(None)

    async def _read(self) -> None:
        backoff_s = 0.1
        while True:
            try:
                message = await self._pubsub.get_message(timeout=_READ_TIMEOUT_S)
            except _REDIS_ERRORS as exc:
                if not self._resync:
                    logger.warning("Redis bus connection lost, retrying: %s", exc)
                self._resync.update(self._channels)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
                continue
            backoff_s = 0.1
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        raw_channel = message["channel"]
        if isinstance(raw_channel, bytes):
            raw_channel = raw_channel.decode()
        channel = raw_channel.removeprefix(self._prefix)
        if kind == "message":
            try:
                event = json.loads(message["data"])
            except ValueError:
                logger.warning("dropped a message that is not JSON on %s", channel)
                return
            self._queue.put_nowait((channel, event))
        elif kind == "subscribe":
            for waiter in self._waiters.get(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)
                    break
            if channel in self._resync:
                self._resync.discard(channel)
                if channel in self._channels:
                    logger.info("Redis bus resubscribed to %s", channel)
                    self._queue.put_nowait((channel, {"type": RESYNC}))


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
