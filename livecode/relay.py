"""Relay: one bus subscription per channel per process, fanned out to per-follower queues.

`follow(execution_id, since)` gives a follower every event of an execution exactly once:

1. subscribe to `execution:{id}` first (shared, reference-counted), so nothing published from
   now on is missed;
2. read the bus history (or, when it has no `finished`, the store's complete event list of a
   final execution) and replay it: output events with seq > since, other events once each;
3. go live, dropping any output with seq <= the last seq sent (the overlap between history and
   live events) and anything after `finished`, which ends the iterator.

A follower that can write an event at once (a WebSocket: `write_now`) is handed its next output
by the reader itself while it waits with nothing queued: one frame for all, no task wake-up
(issue 14). Everything else goes through its queue.

A slow follower never blocks the others: each has a bounded queue. On overflow its live events
are dropped until it drains its queue, then it re-syncs from the history (same steps 2-3), so it
still gets every event. A gap in live output (events lost by the bus, e.g. a Redis reconnect)
also re-syncs; a gap that the history cannot fill ends the follower with an error event.

Attempts: a `status` event of a retried attempt carries `seq`, the last seq before its output
(events.seq_base); the output a follower keeps is what follows the last attempt's RUNNING
status, and numbering goes on from that seq, so the jump is no gap.

No follower waits forever on a bus that lost an event: a channel silent for `check_after_s`
has its execution looked up in the store, and once it is final there, its followers get the
stored events (whatever they lack of them, and `finished`).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

from livecode import metrics
from livecode.bus import (
    RESYNC,
    Bus,
    BusUnavailable,
    Subscriber,
    SubscribesAtOnce,
    SubscribesInOrder,
    execution_channel,
)
from livecode.errors import InternalError, Unavailable
from livecode.events import SharedEvent, error_event

__all__ = ["FOLLOWER_QUEUE_SIZE", "Relay", "WriteNow"]

logger = logging.getLogger(__name__)

FOLLOWER_QUEUE_SIZE: Final = 1024
# How long an execution's channel may be silent before the store is asked whether it ended.
CHECK_AFTER_S: Final = 3.0
_EXECUTION_PREFIX: Final = execution_channel("")

Event = Mapping[str, Any]
# The stored events of an execution: all of them, ending with `finished`, once it is final;
# before that its current `status` alone (or nothing, or None).
LoadFinal = Callable[[str], Awaitable[Sequence[Event] | None]]
# Sends a live event at once, from the reader (no await, no exception), or returns False
# having sent nothing: then it is queued as any other.
WriteNow = Callable[[SharedEvent], bool]

# Markers a follower's get() returns; compared by identity, never sent.
_CLOSED: Final[Event] = {"type": "relay.closed"}
_OVERFLOW: Final[Event] = {"type": "relay.overflow"}
# The marker of the stored events of an execution found final while its channel was silent.
_STORED: Final = "relay.stored"


class Relay:
    """Relays bus events to followers in this server process.

    Call `start()` before following and `close()` at shutdown (the lifespan owns it).
    """

    def __init__(
        self,
        bus: Bus,
        load_final: LoadFinal,
        *,
        follower_queue_size: int = FOLLOWER_QUEUE_SIZE,
        check_after_s: float = CHECK_AFTER_S,
    ) -> None:
        self._bus = bus
        self._load_final = load_final
        self._follower_queue_size = follower_queue_size
        self._check_after_s = check_after_s
        self._subscriber: Subscriber | None = None
        # The subscriber, when it subscribes at once: then no task and no lock per channel.
        self._at_once: SubscribesAtOnce | None = None
        # Or when it sends subscribes in call order: then no task and no lock per channel either.
        self._in_order: SubscribesInOrder | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._channels: dict[str, _Channel] = {}
        self._subscription_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._is_closed = False

    @property
    def subscribed_channels(self) -> frozenset[str]:
        """Channels with at least one follower (one bus subscription each)."""
        return frozenset(self._channels)

    async def start(self) -> None:
        """Open the bus subscriber and start reading it."""
        if self._subscriber is not None:
            raise RuntimeError("Relay.start() called twice")
        self._subscriber = self._bus.subscriber()
        if isinstance(self._subscriber, SubscribesAtOnce):
            self._at_once = self._subscriber
        elif isinstance(self._subscriber, SubscribesInOrder):
            self._in_order = self._subscriber
        self._reader = asyncio.create_task(self._read(self._subscriber), name="relay-reader")
        self._watchdog = asyncio.create_task(self._watch(), name="relay-watchdog")

    async def close(self) -> None:
        """End every follower, stop reading and close the subscriber. Idempotent."""
        if self._is_closed:
            return
        self._is_closed = True
        for channel in self._channels.values():
            for follower in channel.followers:
                follower.close()
        self._channels.clear()
        tasks = [*self._tasks, *(t for t in (self._reader, self._watchdog) if t is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._subscriber is not None:
            await self._subscriber.aclose()

    @asynccontextmanager
    async def follow(
        self, execution_id: str, since: int = 0, *, write_now: WriteNow | None = None
    ) -> AsyncIterator[AsyncIterator[Event]]:
        """Follow an execution: events with output seq > since, then live ones, to `finished`.

        With `write_now`, live output next in order that arrives while the iterator waits with
        nothing queued goes to write_now instead, unless it returns False; the iterator never
        yields what it sent. Safe to cancel: leaving the block unsubscribes. Raises
        BusUnavailable when the bus is down (on entry, or from the iterator while reading the
        history).
        """
        channel = execution_channel(execution_id)
        follower = await self._attach(channel, reads_history=True)
        follower.write_now = write_now
        events = self._follow(execution_id, follower, since)
        try:
            yield events
        finally:
            self._detach(channel, follower)
            await _close_quietly(events)

    @asynccontextmanager
    async def listen(
        self, channel: str, *, queue_size: int | None = None
    ) -> AsyncIterator[AsyncIterator[Event]]:
        """Follow the live events of any channel (e.g. session:{id}); no history, no end.

        A follower too slow for its queue (`queue_size` events, else the relay's) gets an
        error event and its iterator ends. Safe to cancel: leaving the block unsubscribes.
        """
        follower = await self._attach(channel, queue_size)
        events = _listen(channel, follower)
        try:
            yield events
        finally:
            self._detach(channel, follower)
            await _close_quietly(events)

    async def _follow(
        self, execution_id: str, follower: _Follower, since: int
    ) -> AsyncIterator[Event]:
        sent = _Sent(since)
        follower.sent = sent
        for event in await self._catch_up(execution_id, follower, sent):
            yield event
        while not sent.is_finished:
            event = await follower.get()
            if event is _CLOSED:
                yield error_event(Unavailable("the server is shutting down"))
                return
            if event.get("type") == _STORED:
                batch = _accept_backlog(execution_id, event["events"], sent)
            elif event is _OVERFLOW or event.get("type") == RESYNC:
                if event is _OVERFLOW:
                    logger.warning("follower of execution %s too slow: re-syncing", execution_id)
                batch = await self._catch_up(execution_id, follower, sent)
            elif sent.is_gap(event):
                # Live output was lost (e.g. a Redis reconnect): the history has it.
                batch = await self._catch_up(execution_id, follower, sent)
                if not sent.is_finished and sent.is_gap(event):
                    for backlog_event in batch:
                        yield backlog_event
                    yield _output_lost(execution_id, sent)
                    return
                if sent.accept(event):
                    batch.append(event)
            else:
                batch = [event] if sent.accept(event) else []
            for batch_event in batch:
                yield batch_event

    async def _catch_up(self, execution_id: str, follower: _Follower, sent: _Sent) -> list[Event]:
        """Return the backlog events not sent yet; live events queue again from here.

        A backlog with a hole in its output (a history partly lost with Redis) ends with the
        `output lost` error, after what precedes the hole: never a silent gap.
        """
        follower.is_overflowed = False  # before the history read, so nothing falls between
        return _accept_backlog(execution_id, await self._backlog(execution_id), sent)

    async def _backlog(self, execution_id: str) -> Sequence[Event]:
        # Must run after the subscription is active: then backlog + live events miss nothing.
        assert self._subscriber is not None  # a follower is attached
        history = await self._subscriber.history(execution_channel(execution_id))
        if history and _has_every_output(history):
            # Expiry drops a history whole, never in part: this one has everything published
            # so far, and a `finished` not in it yet is published after it is stored, so it
            # will arrive live. The store has nothing to add.
            return history
        stored = await self._load_final(execution_id) or []
        if stored and stored[-1].get("type") == "finished":
            return stored
        # Not final: the history has what was published; without one (a restarted embedded
        # server) the stored status at least tells the follower where the execution is.
        return history or stored

    async def _attach(
        self, channel: str, queue_size: int | None = None, *, reads_history: bool = False
    ) -> _Follower:
        if self._subscriber is None or self._is_closed:
            raise RuntimeError("Relay is not running: await start() first, and not after close()")
        follower = _Follower(queue_size or self._follower_queue_size)
        entry = self._channels.get(channel)
        if entry is None:
            entry = _Channel(self._subscribe_soon(channel))
            self._channels[channel] = entry
        elif _failed(entry.subscribed):
            # Lost with a connection while a follower that stays went on on the next one
            # (which subscribes to every channel): not a reason to fail those who join it.
            entry.subscribed = self._subscribe_soon(channel)
        entry.followers.add(follower)
        metrics.FOLLOWERS.inc()
        if (
            reads_history
            and self._in_order is not None
            and self._in_order.is_connected
            and not entry.subscribed.done()
        ):
            # The history read that follows is answered once the subscribe took effect (or
            # fails with it): subscribe and catch-up go to Redis in one write. (Without a
            # connection, a bus that is down fails the follow on entry, below.)
            _retrieve(entry.subscribed)
            return follower
        try:
            # Shielded: one follower giving up must not cancel a subscription others await.
            await asyncio.shield(entry.subscribed)
        except BaseException:
            self._detach(channel, follower)
            raise
        return follower

    def _subscribe_soon(self, channel: str) -> asyncio.Future[None]:
        if self._at_once is not None:
            self._at_once.subscribe_now(channel)
            subscribed = asyncio.get_running_loop().create_future()
            subscribed.set_result(None)
            return subscribed
        if self._in_order is not None:
            return self._in_order.subscribe_soon(channel)
        return asyncio.ensure_future(self._subscribe(channel))

    def _detach(self, channel: str, follower: _Follower) -> None:
        # Sync, so that it runs even in a cancelled task; the unsubscribe runs in the background.
        entry = self._channels.get(channel)
        if entry is None or follower not in entry.followers:
            return
        entry.followers.discard(follower)
        metrics.FOLLOWERS.dec()
        if entry.followers:
            return
        del self._channels[channel]
        if self._at_once is not None:
            self._at_once.unsubscribe_now(channel)
            return
        if self._in_order is not None:
            _retrieve(entry.subscribed)
            self._in_order.unsubscribe_soon(channel)
            return
        task = asyncio.create_task(self._unsubscribe(channel, entry.subscribed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _subscribe(self, channel: str) -> None:
        assert self._subscriber is not None
        async with self._subscription_lock:
            await self._subscriber.subscribe(channel)

    async def _unsubscribe(self, channel: str, subscribed: asyncio.Future[None]) -> None:
        assert self._subscriber is not None
        try:
            await subscribed
        except Exception:
            return  # never subscribed
        async with self._subscription_lock:
            if channel in self._channels:
                return  # followed again meanwhile: keep the subscription
            try:
                await self._subscriber.unsubscribe(channel)
            except BusUnavailable:
                logger.warning("could not unsubscribe from %s: bus unavailable", channel)

    async def _read(self, subscriber: Subscriber) -> None:
        try:
            async for channel, event in subscriber:
                entry = self._channels.get(channel)
                if entry is not None:
                    entry.heard_at = time.monotonic()
                    # One encoding for all its followers (an in-process bus's comes encoded).
                    shared = event if type(event) is SharedEvent else SharedEvent(event)
                    written = 0
                    for follower in entry.followers:
                        written += follower.offer(shared)
                    if written:
                        metrics.RELAY_WRITTEN.inc(written)
                        # Once, not per socket: observing is a tenth of a direct write's cost.
                        metrics.RELAY_LAG.observe(time.monotonic() - entry.heard_at)
                        # One round of writes per loop iteration, as the follow tasks did: a
                        # burst must not hold the loop for k x followers writes.
                        await asyncio.sleep(0)
        except Exception:
            logger.exception("relay stopped reading the bus")
        # Reading ended: nothing more will arrive, so end every follower rather than hang.
        for entry in self._channels.values():
            for follower in entry.followers:
                follower.close()

    async def _watch(self) -> None:
        """Ask the store about executions whose channel has been silent a while."""
        while True:
            await asyncio.sleep(self._check_after_s / 3)
            now = time.monotonic()
            for channel, entry in list(self._channels.items()):
                if (
                    channel.startswith(_EXECUTION_PREFIX)
                    and entry.checking is None
                    and now - entry.heard_at >= self._check_after_s
                ):
                    entry.checking = asyncio.create_task(self._check(channel, entry))
                    self._tasks.add(entry.checking)
                    entry.checking.add_done_callback(self._tasks.discard)

    async def _check(self, channel: str, entry: _Channel) -> None:
        try:
            stored = await self._load_final(channel.removeprefix(_EXECUTION_PREFIX))
        except Unavailable as exc:
            logger.warning("could not look up %s in the store: %s", channel, exc)
            stored = None
        except Exception:
            logger.exception("looking up %s in the store failed", channel)
            stored = None
        finally:
            entry.checking = None
            entry.heard_at = time.monotonic()  # not again before another silence
        if stored and stored[-1].get("type") == "finished":
            logger.info("%s is final in the store but was silent: relaying the stored end", channel)
            marker = {"type": _STORED, "events": stored}
            for follower in entry.followers:
                follower.push(marker)


class _Channel:
    """One bus subscription and the followers sharing it."""

    __slots__ = ("checking", "followers", "heard_at", "subscribed")

    def __init__(self, subscribed: asyncio.Future[None]) -> None:
        self.subscribed = subscribed
        self.followers: set[_Follower] = set()
        self.heard_at = time.monotonic()  # the last event read off the bus
        self.checking: asyncio.Task[None] | None = None


class _Follower:
    """A bounded queue of live events for one follower; never blocks the reader.

    A deque and one waiter rather than an asyncio.Queue: with 1,000 followers it is pushed
    1,000 times a chunk, and the Queue's bookkeeping was a tenth of that cost (issue 14).
    """

    __slots__ = ("_events", "_size", "_waiter", "is_closed", "is_overflowed", "sent", "write_now")

    def __init__(self, size: int) -> None:
        # Each event with when it was read off the bus, for livecode_relay_lag_seconds.
        self._events: collections.deque[tuple[float, Event]] = collections.deque()
        self._size = size
        self._waiter: asyncio.Future[None] | None = None
        self.is_overflowed = False
        self.is_closed = False
        # Set by a follow: what it sent, and how to send an event without its task.
        self.sent: _Sent | None = None
        self.write_now: WriteNow | None = None

    def offer(self, event: SharedEvent) -> bool:
        """Hand a live event to write_now, or else queue it; return whether it was written.

        Only while the follow waits in get() (so it has sent all it took, and nothing is
        queued), and only the output it expects next: anything else needs the follow's steps.
        """
        waiter = self._waiter
        sent = self.sent
        if (
            waiter is not None
            and not waiter.done()  # a cancelled follow's waiter is cancelled: done
            and self.write_now is not None
            and sent is not None
            and sent.is_next_output(event)
        ):
            try:
                written = self.write_now(event)
            except Exception:
                # It runs in the reader of every follower: this one alone goes the slow way.
                logger.exception("writing to a follower at once failed; queueing its events")
                self.write_now = None
                written = False
            if written:
                sent.last_seq += 1
                return True
        self.push(event)
        return False

    def push(self, event: Event) -> None:
        """Queue a live event; on overflow drop it and every next one until re-synced."""
        if self.is_overflowed or self.is_closed:
            return
        if len(self._events) >= self._size:
            self.is_overflowed = True
        else:
            self._events.append((time.monotonic(), event))
        self._wake()

    def close(self) -> None:
        """End the follower: get() returns _CLOSED from now on."""
        self.is_closed = True
        self._wake()

    async def get(self) -> Event:
        """Return the next live event, _OVERFLOW once drained after an overflow, or _CLOSED."""
        while True:
            if self.is_closed:
                return _CLOSED
            if self._events:
                pushed_at, event = self._events.popleft()
                metrics.RELAY_LAG.observe(time.monotonic() - pushed_at)
                return event
            if self.is_overflowed:
                return _OVERFLOW
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Sent:
    """What a follower has been sent: the last output seq and every other event once."""

    __slots__ = ("is_finished", "last_seq", "_seen")

    def __init__(self, since: int) -> None:
        self.last_seq = since
        self.is_finished = False
        self._seen: set[Any] = set()

    def is_next_output(self, event: Event) -> bool:
        """Return whether the event is the output to send next."""
        return (
            not self.is_finished
            and event.get("type") == "output"
            and _seq(event) == self.last_seq + 1
        )

    def is_gap(self, event: Event) -> bool:
        """Return whether the event is output beyond the next seq."""
        return event.get("type") == "output" and _seq(event) > self.last_seq + 1

    def accept(self, event: Event) -> bool:
        """Return whether to send the event, and count it as sent."""
        if self.is_finished:
            return False
        if event.get("type") == "output":
            seq = _seq(event)
            if seq <= self.last_seq:
                return False
            self.last_seq = seq
            return True
        key = _identity(event)
        if key in self._seen:
            return False
        self._seen.add(key)
        if event.get("type") == "finished":
            self.is_finished = True
        elif event.get("type") == "status":
            # A retried attempt's output goes on after its `seq`: the jump is no gap.
            self.last_seq = max(self.last_seq, _seq(event))
        return True


def _accept_backlog(execution_id: str, backlog: Sequence[Event], sent: _Sent) -> list[Event]:
    """The backlog events not sent yet, counted as sent; one with a hole in its output ends
    with the `output lost` error, after what precedes the hole: never a silent gap."""
    batch = []
    for event in backlog:
        if sent.is_gap(event):
            batch.append(_output_lost(execution_id, sent))
            break
        if sent.accept(event):
            batch.append(event)
    return batch


async def _listen(channel: str, follower: _Follower) -> AsyncIterator[Event]:
    while True:
        event = await follower.get()
        if event is _CLOSED:
            return
        if event is _OVERFLOW:
            logger.warning("follower of %s too slow: ending it", channel)
            yield error_event(InternalError("follower too slow"))
            return
        if event.get("type") != RESYNC:
            yield event


def _identity(event: Event) -> Any:
    """What makes a non-output event the same one again (from the history, then live)."""
    kind = event.get("type")
    if kind == "finished":
        return kind  # an execution has one end
    if kind == "status":
        return kind, event.get("status"), event.get("attempt")  # one per move
    return json.dumps(event, sort_keys=True, separators=(",", ":"))


def _output_lost(execution_id: str, sent: _Sent) -> Event:
    """The follow's last event when output is missing after what it sent."""
    logger.error("execution %s: output after seq %s lost", execution_id, sent.last_seq)
    sent.is_finished = True
    return error_event(InternalError("output lost"))


def _has_every_output(history: Sequence[Event]) -> bool:
    """Whether the outputs run 1, 2, 3... (going on after a retried attempt's `seq`): a Redis
    that lost its data (a restart without persistence) keeps only what was published after it
    came back."""
    expected = 1
    for event in history:
        if event.get("type") == "output":
            if _seq(event) != expected:
                return False
            expected += 1
        elif event.get("type") == "status" and "seq" in event:
            expected = max(expected, _seq(event) + 1)
    return True


def _seq(event: Event) -> int:
    seq = event.get("seq")
    return seq if isinstance(seq, int) else 0


def _failed(subscribed: asyncio.Future[None]) -> bool:
    return subscribed.done() and (subscribed.cancelled() or subscribed.exception() is not None)


def _retrieve(subscribed: asyncio.Future[None]) -> None:
    """Mark a subscribe's failure as seen: its followers were told, or are gone."""
    if subscribed.done():
        if not subscribed.cancelled():
            subscribed.exception()
    else:
        subscribed.add_done_callback(_retrieve)


async def _close_quietly(events: AsyncIterator[Event]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except RuntimeError:  # still running in another task; it ends with that task
            pass
