"""Redis bus: pub/sub between processes and hosts, plus a per-channel history list for replay.

Keys and channels, under a prefix (default `livecode:`):

    {prefix}{channel}            the pub/sub channel
    {prefix}history:{channel}    a list of the kept events, JSON, in publish order, with a TTL
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis
import redis.asyncio
import redis.client
import redis.exceptions

from livecode.bus import HISTORY_TTL_S, RESYNC, BusUnavailable, OnMessage

__all__ = ["RedisBus"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "livecode:"
SUBSCRIBE_TIMEOUT_S = 10.0
_READ_TIMEOUT_S = 1.0
_MAX_BACKOFF_S = 5.0
# Published by a listener's owner to end its reader thread's wait; not JSON, never an event.
_WAKE = b"\x00wake"
_REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


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

    blocks = True

    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, history_ttl_s: float = HISTORY_TTL_S
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._history_ttl_ms = int(history_ttl_s * 1000)
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        self._idle_pubsubs: list[redis.client.PubSub] = []
        self._idle_lock = threading.Lock()

    @property
    def prefix(self) -> str:
        """The prefix of every key and pub/sub channel of this bus."""
        return self._prefix

    def publish(self, channel: str, event: Mapping[str, Any], *, keep: bool = True) -> None:
        """Deliver to every subscriber and, with keep=True, append to history (one MULTI)."""
        data = json.dumps(event, separators=(",", ":"))
        with unavailable_on_redis_errors():
            if not keep:
                self._redis.publish(self._prefix + channel, data)
                return
            key = self._history_key(channel)
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, data)
                # A rolling safety TTL: the history of an abandoned channel never lives forever.
                pipe.pexpire(key, self._history_ttl_ms)
                pipe.publish(self._prefix + channel, data)
                pipe.execute()

    def history(self, channel: str) -> list[dict[str, Any]]:
        """Return the kept events of a channel, in publish order."""
        with unavailable_on_redis_errors():
            kept: list[Any] = self._redis.lrange(self._history_key(channel), 0, -1)
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
        """Call on_message for each event published on the channel, from a reader thread.

        Active when entered. Pub/sub connections are kept for the next listen(): a worker
        listens once per execution, and a new connection each time would cost a connect and
        its handshake.
        """
        name = self._prefix + channel
        pubsub = self._take_pubsub()
        reusable = False
        try:
            with unavailable_on_redis_errors():
                pubsub.subscribe(name)
                _wait_for_subscribe(pubsub, name, SUBSCRIBE_TIMEOUT_S)
            reader = _ListenerThread(pubsub, name, on_message)
            reader.start()
            try:
                yield
            finally:
                reader.stop(self._redis)
            with unavailable_on_redis_errors():
                pubsub.unsubscribe(name)  # type: ignore[no-untyped-call]
            reusable = not reader.failed
        finally:
            if reusable:
                with self._idle_lock:
                    self._idle_pubsubs.append(pubsub)
            else:
                pubsub.close()

    def _take_pubsub(self) -> redis.client.PubSub:
        with self._idle_lock:
            if self._idle_pubsubs:
                return self._idle_pubsubs.pop()
        pubsub: redis.client.PubSub = self._redis.pubsub()  # type: ignore[no-untyped-call]
        return pubsub

    def subscriber(self) -> _RedisSubscriber:
        """Return a new async Subscriber with its own pub/sub connection."""
        return _RedisSubscriber(self._url, self._prefix)

    def ping(self) -> None:
        """Return when Redis answers; raise BusUnavailable when not."""
        with unavailable_on_redis_errors():
            self._redis.ping()

    def close(self) -> None:
        """Close the connection pool."""
        with self._idle_lock:
            idle, self._idle_pubsubs = self._idle_pubsubs, []
        for pubsub in idle:
            pubsub.close()
        self._redis.close()

    def _history_key(self, channel: str) -> str:
        return f"{self._prefix}history:{channel}"


class _ListenerThread(threading.Thread):
    """Reads one channel of a pub/sub connection and hands each event to on_message."""

    def __init__(self, pubsub: redis.client.PubSub, name: str, on_message: OnMessage) -> None:
        super().__init__(name=f"listen-{name[-12:]}", daemon=True)
        self._pubsub = pubsub
        self._name = name
        self._on_message = on_message
        self._stopping = False
        self.failed = False

    def stop(self, client: redis.Redis) -> None:
        """End the thread; a wake-up message spares waiting out the read timeout."""
        self._stopping = True
        try:
            client.publish(self._name, _WAKE)
        except _REDIS_ERRORS:
            pass  # the read times out instead
        self.join()

    def run(self) -> None:
        while not self._stopping:
            try:
                message = self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_READ_TIMEOUT_S
                )
            except _REDIS_ERRORS as exc:
                logger.warning("listener of %s lost Redis: %s", self._name, exc)
                self.failed = True
                return
            # A reused connection may still deliver a message of its previous channel.
            if (
                message is None
                or message["type"] != "message"
                or _channel(message) != self._name
                or message["data"] == _WAKE
            ):
                continue
            try:
                self._on_message(json.loads(message["data"]))
            except Exception:
                logger.exception("a listener of %s failed", self._name)


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
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            await self._redis.aclose()
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
        if message is not None and message["type"] == "subscribe" and _channel(message) == name:
            return
    raise BusUnavailable("Redis bus unavailable: subscribe not confirmed")


def _channel(message: dict[str, Any]) -> str:
    channel = message["channel"]
    return channel.decode() if isinstance(channel, bytes) else str(channel)
