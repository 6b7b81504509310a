"""In-process bus for embedded mode: worker threads publish into the server's event loop."""

from __future__ import annotations

import asyncio
import collections
import heapq
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from livecode.bus import HISTORY_TTL_S, OnMessage
from livecode.events import SharedEvent, encode

__all__ = ["LocalBus"]

logger = logging.getLogger(__name__)

_CLOSED = None


class LocalBus:
    """A thread-safe bus inside one process; history in memory with expiry.

    Events are JSON-encoded on publish, in the encoding the server sends (events.encode), so
    that an event that could not cross Redis fails here too. Listeners and history readers
    decode their own dicts; the relay's subscribers get a SharedEvent carrying that encoding,
    neither decoded nor encoded again (a SharedEvent is never changed, so it may share the
    publisher's nested values).
    """

    def __init__(self, *, history_ttl_s: float = HISTORY_TTL_S) -> None:
        self._history_ttl_s = history_ttl_s
        self._lock = threading.Lock()
        self._history: dict[str, list[str]] = {}
        self._deadlines: dict[str, float] = {}
        self._expiry_heap: list[tuple[float, str]] = []
        self._subscribers: dict[str, set[_LocalSubscriber]] = {}
        self._listeners: dict[str, list[OnMessage]] = {}

    def publish(
        self,
        channel: str,
        event: Mapping[str, Any],
        *,
        keep: bool = True,
        keep_for_s: float | None = None,
    ) -> None:
        """Deliver to every subscriber and, with keep=True, append to history (atomically)."""
        data = encode(event)
        with self._lock:
            now = time.monotonic()
            self._drop_expired(now)
            if keep:
                self._history.setdefault(channel, []).append(data)
                ttl_s = self._history_ttl_s if keep_for_s is None else keep_for_s
                self._set_deadline(channel, now + ttl_s)
            # Delivering under the lock keeps delivery order equal to history order.
            subscribers = self._subscribers.get(channel)
            if subscribers:
                shared = SharedEvent(event, data)
                for subscriber in subscribers:
                    subscriber._deliver(channel, shared)
            for on_message in self._listeners.get(channel, ()):
                try:
                    on_message(json.loads(data))
                except Exception:
                    logger.exception("a listener of %s failed", channel)

    def history(self, channel: str) -> list[dict[str, Any]]:
        """Return the kept events of a channel, in publish order."""
        return [json.loads(data) for data in self._kept(channel)]

    def _shared_history(self, channel: str) -> list[dict[str, Any]]:
        """The history as SharedEvents with their encoding, for the relay."""
        return [SharedEvent(json.loads(data), data) for data in self._kept(channel)]

    def _kept(self, channel: str) -> list[str]:
        with self._lock:
            self._drop_expired(time.monotonic())
            return list(self._history.get(channel, ()))

    def expire(self, channel: str, after_s: float) -> None:
        """Drop the channel's history after_s seconds from now."""
        with self._lock:
            now = time.monotonic()
            if channel in self._history:
                self._set_deadline(channel, now + after_s)
            self._drop_expired(now)

    @contextmanager
    def listen(self, channel: str, on_message: OnMessage) -> Iterator[None]:
        """Call on_message for each event published on the channel; active when entered.

        It runs in the publisher's thread, under the bus lock (so in publish order): it must
        be quick and must not publish.
        """
        with self._lock:
            self._listeners.setdefault(channel, []).append(on_message)
        try:
            yield
        finally:
            with self._lock:
                listeners = self._listeners.get(channel)
                if listeners is not None:
                    listeners.remove(on_message)
                    if not listeners:
                        del self._listeners[channel]

    def subscriber(self) -> _LocalSubscriber:
        """Return a new async Subscriber bound to the loop that first subscribes."""
        return _LocalSubscriber(self)

    def ping(self) -> None:
        """Always works: the bus lives in this process."""

    def close(self) -> None:
        """Forget every history; subscribers stay usable until closed."""
        with self._lock:
            self._history.clear()
            self._deadlines.clear()
            self._expiry_heap.clear()

    def _add_subscriber(self, channel: str, subscriber: _LocalSubscriber) -> None:
        with self._lock:
            self._subscribers.setdefault(channel, set()).add(subscriber)

    def _remove_subscriber(self, channel: str, subscriber: _LocalSubscriber) -> None:
        with self._lock:
            subscribers = self._subscribers.get(channel)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._subscribers[channel]

    def _set_deadline(self, channel: str, deadline: float) -> None:
        current = self._deadlines.get(channel)
        self._deadlines[channel] = deadline
        # An entry a channel, not one an event (a busy server kept millions for an hour): a
        # later deadline is found when the earlier entry comes due; only an earlier one needs
        # an entry of its own.
        if current is None or deadline < current:
            heapq.heappush(self._expiry_heap, (deadline, channel))

    def _drop_expired(self, now: float) -> None:
        # The heap may hold stale deadlines; the dict holds the current one per channel.
        while self._expiry_heap and self._expiry_heap[0][0] <= now:
            due, channel = heapq.heappop(self._expiry_heap)
            deadline = self._deadlines.get(channel)
            if deadline is None:
                continue
            if deadline <= now:
                del self._deadlines[channel]
                self._history.pop(channel, None)
            elif deadline > due:  # moved later since this entry: it comes due then
                heapq.heappush(self._expiry_heap, (deadline, channel))


class _LocalSubscriber:
    """An async subscription fed from any thread: a deque, and a wake-up of the loop through
    call_soon_threadsafe only when none is on its way already (events published back to back
    wake it once). Not an asyncio.Queue: its loop checks and wake-ups were most of a
    delivery's cost."""

    def __init__(self, bus: LocalBus) -> None:
        self._bus = bus
        self._loop: asyncio.AbstractEventLoop | None = None
        self._items: collections.deque[tuple[str, SharedEvent] | None] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wake_pending = False  # set under the bus lock, cleared on the loop
        self._channels: set[str] = set()
        self._is_closed = False

    async def subscribe(self, *channels: str) -> None:
        """Subscribe; active when this returns."""
        for channel in channels:
            self.subscribe_now(channel)

    async def unsubscribe(self, *channels: str) -> None:
        """Unsubscribe from the channels."""
        for channel in channels:
            self.unsubscribe_now(channel)

    def subscribe_now(self, channel: str) -> None:
        """Subscribe (SubscribesAtOnce); on the loop that reads this subscriber."""
        if self._is_closed:
            raise RuntimeError("subscribe() called on a closed subscriber")
        self._loop = asyncio.get_running_loop()
        if channel not in self._channels:
            self._channels.add(channel)
            self._bus._add_subscriber(channel, self)

    def unsubscribe_now(self, channel: str) -> None:
        """Unsubscribe (SubscribesAtOnce)."""
        if channel in self._channels:
            self._channels.discard(channel)
            self._bus._remove_subscriber(channel, self)

    async def history(self, channel: str) -> list[dict[str, Any]]:
        """The bus's history of the channel: in memory, it answers at once."""
        return self._bus._shared_history(channel)

    def __aiter__(self) -> _LocalSubscriber:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items[0]
        if item is _CLOSED:
            raise StopAsyncIteration  # left in place: every later __anext__ ends too
        self._items.popleft()
        return item

    async def aclose(self) -> None:
        """Close the subscription; iteration ends (after what was delivered). Idempotent."""
        if self._is_closed:
            return
        self._is_closed = True
        await self.unsubscribe(*self._channels)
        self._items.append(_CLOSED)
        self._wake()

    def _deliver(self, channel: str, event: SharedEvent) -> None:
        # Called by publish() from any thread, under the bus lock. The item goes in before the
        # flag is read: a wake-up on its way (flag set) finds it when it runs.
        loop = self._loop
        if loop is None:
            return
        self._items.append((channel, event))
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: nobody is reading any more
            logger.debug("dropped an event on %s: subscriber loop closed", channel)

    def _wake(self) -> None:
        # On the loop. Cleared before the reader runs: an item delivered from now on schedules
        # a wake-up of its own.
        self._wake_pending = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
