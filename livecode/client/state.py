"""The client's side of the WebSocket protocol, without I/O: refs, replies, follows, reconnects.

Both clients drive one `ClientState` (sync.py from threads under a lock, asyncio.py from its
event loop) and do the sending and waiting themselves::

    request(message, waiter, ...)  -> frames to send now (none while the socket is down)
    receive(text)                  -> frames to send back, later (a follow that must resume)
    connected()                    -> frames for a socket just (re)opened: resubscribes, resends
    disconnected(), fail(exc)

A waiter is a future (`concurrent.futures.Future` or `asyncio.Future`: both have `set_result`,
`set_exception` and `done`) and an inbox a queue (`queue.SimpleQueue` or `asyncio.Queue`: both
have `put_nowait`), so this module needs neither threads nor asyncio.

Requests are matched to answers by `ref`. `subscribe`, `stdin` and `cancel` get no answer when
they work, only an `error` when they fail: each goes out followed by a `ping` with the same ref,
and since the server handles one socket's messages in order, whichever of `error` or `pong`
comes back first with that ref says how it went.

A `Follow` remembers, per execution, the last output seq it passed on and the other events it
has seen. After a reconnect every unfinished follow is subscribed again with `since` = that
seq, so the caller gets every event exactly once, whatever the server replays.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from livecode.client.errors import (
    ConnectionLost,
    Unauthorized,
    error_from,
    error_from_http,
    logger,
)
from livecode.client.models import Event, Finished, Limits, Output, Status, parse_event
from livecode.client.wire import Refused

# typing costs `livecode run` 3 ms of start, and type checkers read this constant as its own.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Waiter(Protocol):
        def done(self) -> bool: ...
        def set_result(self, result: dict[str, Any], /) -> None: ...
        def set_exception(self, exception: BaseException, /) -> None: ...

    class Inbox(Protocol):
        def put_nowait(self, item: Event | BaseException, /) -> None: ...


__all__ = [
    "ClientState",
    "Follow",
    "Resend",
    "Transcript",
    "autosave_message",
    "closed_error",
    "is_for_good",
    "opening_error",
    "reconnect_delays",
    "run_message",
]

EXECUTION_EVENTS = frozenset({"status", "output", "finished"})
# A follow the server ended ("subscribe again with since") is resumed after these pauses; one
# that keeps failing without an event in between is given up, and its caller told why.
RESUBSCRIBE_DELAYS_S = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 2.0, 2.0)
# Close codes that say the client broke a rule (1008: flooding; 1009: a frame over the server's
# size cap; 1002, 1003, 1007, 1010: bad frames): the same client would be closed again. Any
# other end (1006 dropped, 1011 keepalive timeout, 1012 server restart, ...) is worth a retry.
CLOSED_FOR_GOOD = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
_CLOSE_MEANINGS = {
    1008: "policy violation: too many messages a second",
    1009: "a message larger than the server accepts",
}
RECONNECT_MAX_DELAY_S = 2.0


# Plain classes rather than dataclasses: importing dataclasses costs `livecode run` 8 ms of
# start (models.py says more).


class Resend:
    """Frames to send on socket `generation` after `delay_s` (skipped if it is gone by then)."""

    __slots__ = ("frames", "generation", "delay_s")

    def __init__(self, frames: list[str], generation: int, delay_s: float = 0.0) -> None:
        self.frames = frames
        self.generation = generation
        self.delay_s = delay_s


class Follow:
    """What the caller has been given of one execution's events: each once, in order."""

    __slots__ = ("execution_id", "inbox", "last_seq", "is_finished", "failures", "_seen")

    def __init__(self, execution_id: str, inbox: Inbox, last_seq: int = 0) -> None:
        self.execution_id = execution_id
        self.inbox = inbox
        self.last_seq = last_seq
        self.is_finished = False
        self.failures = 0  # follows the server ended in a row, without an event between
        self._seen: set[tuple[Any, ...]] = set()

    def accept(self, data: dict[str, Any]) -> Event | None:
        """The typed event if it is new and next; None for a repeat (or a gap, see below)."""
        if self.is_finished:
            return None
        kind = data.get("type")
        if kind == "output":
            seq = data.get("seq")
            if not isinstance(seq, int) or seq != self.last_seq + 1:
                return None  # a repeat, or beyond a gap: the caller re-subscribes from last_seq
            self.last_seq = seq
        elif kind == "status":
            key = ("status", data.get("status"), data.get("attempt"))
            if key in self._seen:
                return None
            self._seen.add(key)
            seq = data.get("seq")
            if isinstance(seq, int) and seq > self.last_seq:
                # A retried attempt numbers its output after its status's seq (README,
                # Reliability): the jump is no gap.
                self.last_seq = seq
        elif kind == "finished":
            self.is_finished = True
        self.failures = 0
        return parse_event(data)

    def is_gap(self, data: dict[str, Any]) -> bool:
        seq = data.get("seq")
        return data.get("type") == "output" and isinstance(seq, int) and seq > self.last_seq + 1


class _Pending:
    __slots__ = ("message", "waiter", "is_idempotent", "is_silent", "inbox", "generation")

    def __init__(
        self,
        message: dict[str, Any],
        waiter: Waiter,
        is_idempotent: bool,
        is_silent: bool,
        inbox: Inbox | None,
    ) -> None:
        self.message = message
        self.waiter = waiter
        self.is_idempotent = is_idempotent
        self.is_silent = is_silent  # no answer on success: confirmed by a ping with the same ref
        self.inbox = inbox  # a run's: its execution is followed from the `queued` answer on
        self.generation: int | None = None  # the socket it went out on; None: not sent yet

    def frames(self) -> list[str]:
        frames = [_encode(self.message)]
        if self.is_silent:
            frames.append(_encode({"type": "ping", "ref": self.message["ref"]}))
        return frames


class ClientState:
    """Requests in flight and executions followed on one (re)connecting socket. Not
    thread-safe: the sync client holds a lock around every call."""

    def __init__(self) -> None:
        self.generation = 0  # counts sockets opened; frames carry the one they are meant for
        self.is_connected = False
        self.failure: BaseException | None = None  # set once the client has given up
        self._pending: dict[str, _Pending] = {}
        self._follows: dict[str, Follow] = {}
        self._refs = 0

    def request(
        self,
        message: dict[str, Any],
        waiter: Waiter,
        *,
        is_idempotent: bool,
        is_silent: bool = False,
        inbox: Inbox | None = None,
    ) -> list[str]:
        """Register a request; return its frames if the socket is up (else they go later)."""
        if self.failure is not None:
            raise self.failure
        self._refs += 1
        ref = f"c{self._refs}"
        pending = _Pending({**message, "ref": ref}, waiter, is_idempotent, is_silent, inbox)
        self._pending[ref] = pending
        if not self.is_connected:
            return []
        pending.generation = self.generation
        return pending.frames()

    def follow(self, execution_id: str, inbox: Inbox, since: int = 0) -> Follow:
        """Hand the execution's events after output `since` to `inbox` (replacing any other)."""
        follow = Follow(execution_id, inbox, last_seq=since)
        self._follows[execution_id] = follow
        return follow

    def forget(self, execution_id: str) -> None:
        """Stop handing out the execution's events."""
        self._follows.pop(execution_id, None)

    def subscribe_message(self, follow: Follow) -> dict[str, Any]:
        return {"type": "subscribe", "execution_id": follow.execution_id, "since": follow.last_seq}

    def receive(self, text: str | bytes) -> Resend | None:
        """Take one frame from the server; return frames to send back, if any."""
        data = json.loads(text)
        if not isinstance(data, dict):
            return None
        kind = data.get("type")
        pending = self._pending.pop(data["ref"], None) if "ref" in data else None
        if pending is not None:
            self._answer(pending, data)
            return None
        if kind in EXECUTION_EVENTS:
            return self._deliver(data)
        if kind == "error" and "session_id" not in data:
            return self._follow_error(data)
        return None  # session.updated, a late pong, a session follow's end: nothing waits

    def connected(self) -> list[str]:
        """A socket is open (again): resubscribe every follow, resend what may go again."""
        self.generation += 1
        self.is_connected = True
        frames = []
        for ref, pending in list(self._pending.items()):
            if isinstance(pending.waiter, _FollowWaiter):
                del self._pending[ref]  # an earlier resubscribe: the one below replaces it
                continue
            if pending.generation is not None and not pending.is_idempotent:
                del self._pending[ref]
                _settle(
                    pending.waiter,
                    ConnectionLost(
                        f"the connection dropped while {pending.message['type']!r} was on its "
                        "way: it may or may not have been carried out"
                    ),
                )
                continue
            pending.generation = self.generation
            frames += pending.frames()
        for follow in self.open_follows():
            frames += self._resubscribe(follow)
        return frames

    def disconnected(self) -> None:
        self.is_connected = False

    def fail(self, exc: BaseException) -> None:
        """Give up: every request in flight and every follow gets `exc`; later calls raise it."""
        self.failure = exc
        self.is_connected = False
        pending, self._pending = self._pending, {}
        for request in pending.values():
            _settle(request.waiter, exc)
        for follow in self.open_follows():
            follow.is_finished = True
            follow.inbox.put_nowait(exc)
        self._follows.clear()

    def open_follows(self) -> Iterator[Follow]:
        return (f for f in list(self._follows.values()) if not f.is_finished)

    # helpers

    def _answer(self, pending: _Pending, data: dict[str, Any]) -> None:
        if data.get("type") == "error":
            _settle(pending.waiter, error_from(data))
            return
        if data.get("type") == "queued" and pending.inbox is not None:
            # Before the caller wakes up: the execution's events follow this answer at once.
            self.follow(data["execution_id"], pending.inbox)
        _settle(pending.waiter, data)

    def _deliver(self, data: dict[str, Any]) -> Resend | None:
        follow = self._follows.get(data.get("execution_id", ""))
        if follow is None:
            return None
        if follow.is_gap(data):
            # Never seen from a server keeping its guarantee; asking again costs one message.
            logger(__name__).warning("execution %s: output seq %s after %s", *_gap(follow, data))
            return Resend(self._resubscribe(follow), self.generation)
        event = follow.accept(data)
        if event is not None:
            follow.inbox.put_nowait(event)
            if isinstance(event, Finished):
                del self._follows[follow.execution_id]
        return None

    def _follow_error(self, data: dict[str, Any]) -> Resend | None:
        """An error that ended the server's follow of an execution: resume it, or tell why not."""
        execution_id = data.get("execution_id")
        if execution_id is not None:
            follows = [f for f in self.open_follows() if f.execution_id == execution_id]
        else:  # older servers do not say which: it is one of them, and subscribing is harmless
            follows = list(self.open_follows())
        frames: list[str] = []
        delay_s = 0.0
        for follow in follows:
            retryable = data.get("code") == "unavailable"
            if not retryable and len(follows) > 1:
                logger(__name__).warning("unattributed error on a shared socket: %s", data)
                continue
            if retryable and follow.failures < len(RESUBSCRIBE_DELAYS_S):
                delay_s = max(delay_s, RESUBSCRIBE_DELAYS_S[follow.failures])
                follow.failures += 1
                frames += self._resubscribe(follow)
                continue
            follow.is_finished = True
            del self._follows[follow.execution_id]
            follow.inbox.put_nowait(error_from(data))
        return Resend(frames, self.generation, delay_s) if frames else None

    def _resubscribe(self, follow: Follow) -> list[str]:
        waiter = _FollowWaiter(self, follow)
        return self.request(
            self.subscribe_message(follow), waiter, is_idempotent=True, is_silent=True
        )


class Transcript:
    """An execution's output joined per stream, as its events are read: what the server stores.

    A new attempt (a retried run) starts the outputs again, as the stored output is the last
    attempt's.
    """

    def __init__(self) -> None:
        self.parts: dict[str, list[str]] = {"stdout": [], "stderr": [], "compile": []}
        self.attempt: int | None = None

    def add(self, event: Event) -> None:
        if isinstance(event, Output):
            self.parts.setdefault(event.stream, []).append(event.data)
        elif isinstance(event, Status) and event.status == "RUNNING" and event.attempt:
            if self.attempt is not None and event.attempt > self.attempt:
                for parts in self.parts.values():
                    parts.clear()
            self.attempt = event.attempt

    def text(self, stream: str) -> str:
        return "".join(self.parts.get(stream, ()))


class _FollowWaiter:
    """The waiter of a resubscribe: a refusal (the execution is gone) ends the follow."""

    def __init__(self, state: ClientState, follow: Follow) -> None:
        self._state = state
        self._follow = follow
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: dict[str, Any], /) -> None:
        self._done = True

    def set_exception(self, exception: BaseException, /) -> None:
        self._done = True
        if isinstance(exception, ConnectionLost):
            return  # the reconnect subscribes again, or the client fails every follow
        if not self._follow.is_finished:
            self._follow.is_finished = True
            self._state.forget(self._follow.execution_id)
            self._follow.inbox.put_nowait(exception)


def run_message(
    session_id: str,
    stdin: str | None,
    args: Sequence[str],
    limits: Limits | None,
    interactive: bool,
) -> dict[str, Any]:
    """A `run` message, without the options left at the server's defaults."""
    message: dict[str, Any] = {"type": "run", "session_id": session_id}
    if stdin is not None:
        message["stdin"] = stdin
    if args:
        message["args"] = list(args)
    if limits is not None:
        message["limits"] = limits.to_json()
    if interactive:
        message["interactive"] = True
    return message


def autosave_message(session_id: str, source_code: str, base_version: int | None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "autosave",
        "session_id": session_id,
        "source_code": source_code,
    }
    if base_version is not None:
        message["base_version"] = base_version
    return message


def closed_error(url: str, close_code: int | None, close_reason: str | None) -> ConnectionLost:
    """The error for a socket the server closed for good."""
    close_reason = close_reason or ""
    meaning = close_reason or _CLOSE_MEANINGS.get(close_code or 0, "")
    return ConnectionLost(
        f"{url} closed the connection ({close_code}{': ' + meaning if meaning else ''})",
        close_code=close_code,
        close_reason=close_reason,
    )


def is_for_good(close_code: int | None) -> bool:
    """Whether a socket closed with this code must not be opened again."""
    return close_code is not None and (close_code in CLOSED_FOR_GOOD or 4000 <= close_code < 5000)


def reconnect_delays() -> Iterator[float]:
    """Pauses before each attempt to open the socket again: at once, then doubling up to 2 s."""
    delay_s = 0.0
    while True:
        yield delay_s
        delay_s = min(RECONNECT_MAX_DELAY_S, max(0.05, delay_s * 2))


def opening_error(exc: Exception, url: str) -> tuple[Exception, bool]:
    """The exception for a failed socket opening, and whether trying again may help.

    `exc` comes from wire.connect() (Refused) or websockets (InvalidStatus, with a `response`):
    told apart without importing websockets, which the threading client does not load.
    """
    if isinstance(exc, Refused):
        status, headers, body = exc.status, exc.headers, exc.body
    elif hasattr(getattr(exc, "response", None), "status_code"):
        response: Any = getattr(exc, "response")  # noqa: B009 - typed as Any on purpose
        status, headers, body = response.status_code, response.headers, response.body
    else:
        return ConnectionLost(f"cannot reach {url}: {exc}"), True
    try:
        error_body = json.loads(body or b"")
    except ValueError:
        error_body = None
    error = error_from_http(status, error_body, headers.get("retry-after"))
    if status == 403:  # refused before any message: the Origin check
        error = Unauthorized(f"{url} refused the connection (HTTP 403: Origin not allowed?)")
    return error, status >= 500 or status == 429


def _settle(waiter: Waiter, outcome: dict[str, Any] | BaseException) -> None:
    if waiter.done():  # the caller stopped waiting (a timeout, a cancelled task)
        return
    if isinstance(outcome, BaseException):
        waiter.set_exception(outcome)
    else:
        waiter.set_result(outcome)


def _gap(follow: Follow, data: dict[str, Any]) -> tuple[str, Any, int]:
    return follow.execution_id, data.get("seq"), follow.last_seq


def _encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
