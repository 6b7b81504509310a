"""The bus: publish/subscribe of events between workers and servers, with a per-channel history.

Channels (the only ones in use):

    execution:{id}   status, output and finished events of one execution (kept in history)
    control:{id}     cancel and stdin messages for the worker running an execution (kept, so
                     a worker that starts listening late still gets them)
    session:{id}     session.updated events for the other sockets following a session (not kept)

Two backends share the `Bus` protocol: `LocalBus` (one process, embedded mode) and `RedisBus`
(any number of processes and hosts). `create_bus()` picks one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Final, Protocol, runtime_checkable

from livecode.errors import Unavailable

__all__ = [
    "CONTROL_PREFIX",
    "HISTORY_AFTER_FINAL_S",
    "HISTORY_TTL_S",
    "RESYNC",
    "Bus",
    "BusUnavailable",
    "OnMessage",
    "Subscriber",
    "SubscribesAtOnce",
    "SubscribesInOrder",
    "control_channel",
    "create_bus",
    "execution_channel",
    "session_channel",
]

# The type of the marker event a Subscriber yields on a channel after it lost its connection and
# subscribed again: events on that channel may have been missed, so re-read the history.
RESYNC: Final = "bus.resync"

# How long a channel's history lives after its last kept event, unless expire() says sooner.
HISTORY_TTL_S: Final = 3600.0

# Followers that come later read final executions from the store; a channel's history is
# needed only until then, plus a margin for followers that read it just before the end.
HISTORY_AFTER_FINAL_S: Final = 60.0


class BusUnavailable(Unavailable):
    """The bus backend cannot be reached (Redis down or unreachable): a 503 for clients."""

    def __init__(self, message: str = "the event bus (Redis) is unavailable") -> None:
        super().__init__(message, retry_after=5.0)


def execution_channel(execution_id: str) -> str:
    """Return the channel carrying an execution's events."""
    return f"execution:{execution_id}"


CONTROL_PREFIX: Final = "control:"


def control_channel(execution_id: str) -> str:
    """Return the channel carrying control messages (cancel, stdin) for an execution."""
    return f"{CONTROL_PREFIX}{execution_id}"


def session_channel(session_id: str) -> str:
    """Return the channel carrying session.updated events of a session."""
    return f"session:{session_id}"


# What a worker thread's listen() calls with each event of the channel.
OnMessage = Callable[[dict[str, Any]], None]


class Subscriber(Protocol):
    """An async subscription to any number of channels, for the server loop.

    Iterating yields `(channel, event)` pairs in publish order per channel. After a lost
    connection is restored it yields `(channel, {"type": RESYNC})` for each channel. Events of a
    channel already unsubscribed may still arrive shortly after `unsubscribe()`.
    """

    async def subscribe(self, *channels: str) -> None:
        """Subscribe; returns once the subscription is active."""
        ...

    async def unsubscribe(self, *channels: str) -> None:
        """Unsubscribe from the channels."""
        ...

    async def history(self, channel: str) -> list[dict[str, Any]]:
        """Return the kept events of a channel, in publish order, without blocking the loop."""
        ...

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...

    async def __anext__(self) -> tuple[str, dict[str, Any]]: ...

    async def aclose(self) -> None:
        """Close the subscription; iteration ends. Idempotent."""
        ...


@runtime_checkable
class SubscribesAtOnce(Protocol):
    """A Subscriber whose subscriptions take effect at once, without I/O (the in-process
    bus's): the relay subscribes inline, with no task and lock per channel (half the CPU of a
    follow's start and end, which embedded mode pays once a run)."""

    def subscribe_now(self, channel: str) -> None:
        """Subscribe; active on return. On the subscriber's loop."""
        ...

    def unsubscribe_now(self, channel: str) -> None:
        """Unsubscribe. On the subscriber's loop."""
        ...


@runtime_checkable
class SubscribesInOrder(Protocol):
    """A Subscriber that sends subscribes and unsubscribes as they are called, in that order,
    on the connection its history reads go by (the Redis bus's): the relay subscribes with no
    task and lock per channel."""

    def subscribe_soon(self, channel: str) -> asyncio.Future[None]:
        """Send a subscribe; the future is done once it is active (BusUnavailable if not)."""
        ...

    def unsubscribe_soon(self, channel: str) -> None:
        """Unsubscribe: nothing more is yielded for the channel from now on."""
        ...

    @property
    def is_connected(self) -> bool:
        """Whether its connection is open (else a subscribe waits for one, and fails when
        the bus is down)."""
        ...


class Bus(Protocol):
    """Publish/subscribe with a per-channel history."""

    def publish(
        self,
        channel: str,
        event: Mapping[str, Any],
        *,
        keep: bool = True,
        keep_for_s: float | None = None,
    ) -> None:
        """Deliver to every subscriber, and with keep=True append to the channel's history.

        The history append and the delivery are atomic: a reader that subscribes first and then
        reads the history misses nothing. The history lives `keep_for_s` from now (default:
        HISTORY_TTL_S, renewed by each kept event). Thread-safe; raises BusUnavailable.
        """
        ...

    def history(self, channel: str) -> list[dict[str, Any]]:
        """Return the kept events of a channel, in publish order."""
        ...

    def expire(self, channel: str, after_s: float) -> None:
        """Drop the channel's history after_s seconds from now."""
        ...

    def listen(self, channel: str, on_message: OnMessage) -> AbstractContextManager[None]:
        """Call on_message(event) for each event published on the channel inside the block.

        Active when entered. on_message runs in another thread (the publisher's, or a reader
        thread of the bus) and must be quick; an exception it raises is logged.
        """
        ...

    def subscriber(self) -> Subscriber:
        """Return a new async Subscriber (one connection each) for the server loop."""
        ...

    def ping(self) -> None:
        """Return when the backend works; raise BusUnavailable when not."""
        ...

    def close(self) -> None:
        """Release the backend's connections."""
        ...


def create_bus(redis_url: str | None) -> Bus:
    """Return a RedisBus for a Redis URL, else a LocalBus (embedded mode)."""
    if redis_url is None:
        from livecode.bus.local import LocalBus

        return LocalBus()
    from livecode.bus.redis import RedisBus

    return RedisBus(redis_url)
