"""The queue: how a queued execution reaches a worker thread's `Executor.execute(execution_id)`.

Distributed: a Dramatiq message on Redis and the `execute` actor; web processes only send,
worker processes consume with Dramatiq worker threads. Embedded: an in-process queue read by
worker threads of the server itself (`_LocalQueue`).

A message is only a hand-off: the store says what is QUEUED. Each message is named after the
attempt it starts (``{execution_id}.{attempt}``), so that a sweeper can ask whether it still
exists (`missing`) and enqueue again what was lost (a Redis restarted without its data).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis
from dramatiq.middleware import Middleware, TimeLimit

from livecode import metrics
from livecode.bus.redis import PackedCommands, pack
from livecode.config import Settings
from livecode.errors import Unavailable, unavailable_on
from livecode.store import AtCapacity

logger = logging.getLogger(__name__)

QUEUE_NAME = "executions"
# Dramatiq's TimeLimit is only a backstop: the sandbox owns the deadline and kills the tree.
BACKSTOP_MARGIN_S = 60
# A consumer whose threads are all busy fetches nothing, and so tells Redis it lives only by
# this explicit heartbeat; Dramatiq's maintenance (forced by each sweeper pass) gives the
# messages of a consumer silent for BROKER_HEARTBEAT_TIMEOUT_S back to the queue.
BROKER_HEARTBEAT_S = 5.0
BROKER_HEARTBEAT_TIMEOUT_S = 30.0
# Threads still running once a shutdown's grace is over: how long they get to hand back.
HAND_BACK_S = 10.0
# Runs under way at once in the threads of the socket commands that queued them
# (runs_after_reply); past that, worker threads take them. websocket.in_thread's pool has this
# many threads beside its commands': were runs to take them all, the commands they wait for
# (a stdin, a cancel) would wait for them in turn, until their wall time ran out.
MOST_RUNS_AFTER_REPLY = 32
# How often an idle worker thread looks whether it was told to stop: Dramatiq's threads wait
# for work no longer than that, so a shutdown does not wait out the broker's idle poll.
WORKER_THREAD_POLL_MS = 1000


class Queue:
    """Sends `execute` messages and, when given an executor, runs worker threads that take them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._execute: Callable[[str], None] | None = None
        self._worker: dramatiq.Worker | None = None
        self._local: _LocalQueue | None = None
        self.broker: WakingRedisBroker | None = None
        if not settings.redis_url:
            self._local = _LocalQueue()
            return
        # Only the backstop time limit: no retries (recovery is not Dramatiq's job here), no
        # age limits, pipelines or callbacks; each middleware is a hook on every message.
        middleware: list[Middleware] = [TimeLimit()]
        self.broker = WakingRedisBroker(
            url=settings.redis_url,
            namespace="livecode-dramatiq",
            middleware=middleware,
            heartbeat_timeout=int(BROKER_HEARTBEAT_TIMEOUT_S * 1000),
            idle_poll_ms=settings.broker_poll_ms,
        )
        # a run with test cases runs its program once per case, each with the wall time
        longest_s = settings.wall_timeout_s * settings.max_cases + settings.compile_timeout_s
        backstop_ms = int((longest_s + BACKSTOP_MARGIN_S) * 1000)
        self.actor: dramatiq.Actor[[str], None] = dramatiq.actor(  # type: ignore[call-overload]
            self._receive,
            broker=self.broker,
            actor_name="execute",
            queue_name=QUEUE_NAME,
            time_limit=backstop_ms,
        )

    def enqueue(self, execution_id: str, *, attempt: int = 1) -> None:
        """Hand an execution to whichever worker is free, for its attempt `attempt`.

        Raises Unavailable when Redis is down.
        """
        if self._local is not None:
            self._local.put(execution_id)
            return
        try:
            with unavailable_on(
                redis.RedisError, message="the queue (Redis) is unavailable", retry_after=5.0
            ):
                self.actor.send_with_options(
                    args=(execution_id,), redis_message_id=message_id(execution_id, attempt)
                )
        except Unavailable:
            metrics.QUEUE_ERRORS.inc()
            raise

    def missing(self, due: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Of these (execution id, attempt) pairs, those with no message waiting or at work.

        Raises Unavailable when Redis is down.
        """
        if self._local is not None:
            return [(id_, attempt) for id_, attempt in due if not self._local.holds(id_)]
        assert self.broker is not None
        with unavailable_on(
            redis.RedisError, message="the queue (Redis) is unavailable", retry_after=5.0
        ):
            return self.broker.missing(QUEUE_NAME, due)

    def maintain(self) -> None:
        """Give the messages of consumers that stopped beating back to the queue (Redis)."""
        if self.broker is not None:
            with unavailable_on(redis.RedisError, message="the queue (Redis) is unavailable"):
                self.broker.maintain(QUEUE_NAME)

    def start_workers(self, execute: Callable[[str], None], threads: int) -> None:
        """Consume messages with `threads` worker threads in this process."""
        if self._execute is not None:
            raise RuntimeError("Queue.start_workers() was called twice")
        self._execute = execute
        if self._local is not None:
            self._local.start(execute, threads)
        else:
            assert self.broker is not None
            self._worker = dramatiq.Worker(
                self.broker,
                queues={QUEUE_NAME},
                worker_threads=threads,
                worker_timeout=min(self.settings.broker_poll_ms, WORKER_THREAD_POLL_MS),
            )
            # Take no more messages than there are threads to run them (Dramatiq's default is
            # twice that): a message held here waits for a free thread while another worker
            # process may sit idle.
            self._worker.queue_prefetch = threads
            self._worker.start()
        logger.info("%d worker threads consuming %s", threads, QUEUE_NAME)

    @property
    def worker_threads(self) -> int:
        """Threads consuming in this process (0 in a web process of distributed mode)."""
        if self._local is not None:
            return self._local.threads
        return len(self._worker.workers) if self._worker is not None else 0

    def close(self, timeout_s: float = 30.0, on_timeout: Callable[[], None] | None = None) -> None:
        """Take no new message; let running executions finish within `timeout_s`; then call
        `on_timeout` (which hands the rest back), wait for that, and close.

        Messages fetched but not started go back to the queue.
        """
        if self._local is not None:
            self._local.stop(timeout_s, on_timeout)
            return
        if self._worker is not None:
            threads = list(self._worker.workers)
            for thread in threads:
                thread.stop()  # each ends after its current message
            _join(threads, timeout_s)
            if on_timeout is not None and any(thread.is_alive() for thread in threads):
                on_timeout()
                _join(threads, HAND_BACK_S)
            # A consumer waits for work up to the idle poll: told to stop, then woken, it
            # ends now, and so the Worker's stop does not wait that long for it.
            for consumer in self._worker.consumers.values():
                consumer.stop()
            assert self.broker is not None
            self.broker.wake_consumers()
            self._worker.stop(timeout=int(HAND_BACK_S * 1000))
            self._worker = None
        assert self.broker is not None
        self.broker.close()

    def _receive(self, execution_id: str) -> None:
        if self._execute is None:
            raise RuntimeError("an execute message reached a process without an executor")
        try:
            self._execute(execution_id)
        except AtCapacity:
            # Its creator runs all it may (a tenant's quota, issue 11): the message is done
            # with, the thread goes to the next one, and a sweeper enqueues this one again.
            logger.debug("execution %s held back: its creator runs all it may", execution_id)

    def describe(self) -> dict[str, Any]:
        """Broker kind, for health answers."""
        return {"broker": "redis" if self.settings.redis_url else "in-process"}


class _LocalQueue:
    """Embedded mode's broker: execution ids handed straight to this process's worker threads.

    Not Dramatiq's in-process StubBroker, which is meant for tests: its consumer thread put one
    more thread hand-off, a message encoding and the middleware in every run's path, 4-5 % of
    embedded runs/s and 0.3 ms of latency (bench A/B). Nothing here outlives the process, as
    with that broker: at the next start the store's QUEUED executions are queued again.

    Each run takes one of `threads` turns, so that no more run at once than there are worker
    threads (and sandbox slots). A socket's command that queues a run while a turn is free, and
    no run queued before waits for one, runs it itself once its reply is on its way
    (`runs_after_reply`), instead of waking a worker thread for it: one thread hand-off a run
    less.
    """

    def __init__(self) -> None:
        self._pending: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._stopping = False
        self._execute: Callable[[str], None] | None = None
        # One turn a worker thread (from start()), free or handed to the worker threads that
        # wait for one, the first first (not a semaphore: a thread that frees one could take
        # it back at once for a run queued later than theirs). Under _held_lock, as the counts.
        self._free_turns = 0
        self._turn_waiters: collections.deque[threading.Event] = collections.deque()
        # Ids put and not yet done with (waiting, or at work): what `holds` answers from.
        self._held: collections.Counter[str] = collections.Counter()
        self._held_lock = threading.Lock()
        self._borrowed = 0  # runs under way in the threads of the commands that queued them
        self._waiting = 0  # ids put on the queue that have no turn yet: none is overtaken
        self._borrowed_done = threading.Condition(self._held_lock)

    @property
    def threads(self) -> int:
        return len(self._workers)

    def put(self, execution_id: str) -> None:
        deferred: list[tuple[_LocalQueue, str]] | None = getattr(_after_reply, "deferred", None)
        with self._held_lock:
            self._held[execution_id] += 1
            borrow = (
                deferred is not None
                and not self._stopping
                and not self._waiting
                and self._borrowed < MOST_RUNS_AFTER_REPLY
                and self._free_turns > 0
            )
            if borrow:
                self._free_turns -= 1
                self._borrowed += 1
            else:
                self._waiting += 1
        if borrow:
            assert deferred is not None
            deferred.append((self, execution_id))
        else:
            self._pending.put(execution_id)

    def holds(self, execution_id: str) -> bool:
        """Whether the id waits here or is at work."""
        with self._held_lock:
            return self._held[execution_id] > 0

    def start(self, execute: Callable[[str], None], threads: int) -> None:
        self._execute = execute
        for index in range(threads):
            worker = threading.Thread(
                target=self._work, args=(execute,), name=f"livecode-worker-{index}", daemon=True
            )
            worker.start()
            self._workers.append(worker)
            self._give_turn()

    def stop(self, timeout_s: float, on_timeout: Callable[[], None] | None = None) -> None:
        """Take nothing more; wait up to `timeout_s` for the running executions to end, then
        call `on_timeout` and wait for the rest a little longer."""
        self._stopping = True
        for _ in self._workers:
            self._pending.put(None)  # wakes a waiting thread
        deadline = time.monotonic() + timeout_s
        _join(self._workers, timeout_s)
        self._wait_borrowed(deadline)
        if on_timeout is not None and (
            self._borrowed or any(worker.is_alive() for worker in self._workers)
        ):
            on_timeout()
            _join(self._workers, HAND_BACK_S)
            self._wait_borrowed(time.monotonic() + HAND_BACK_S)
        self._workers.clear()

    def _wait_borrowed(self, deadline: float) -> None:
        with self._borrowed_done:
            self._borrowed_done.wait_for(
                lambda: not self._borrowed, max(0.0, deadline - time.monotonic())
            )

    def _work(self, execute: Callable[[str], None]) -> None:
        while True:
            execution_id = self._pending.get()
            if execution_id is None or self._stopping:
                return  # one left queued stays QUEUED in the store: the next start runs it
            self._take_turn()  # a command's run may hold this thread's turn a while
            try:
                if self._stopping:
                    return
                self._run(execute, execution_id)
            finally:
                self._give_turn()

    def _take_turn(self) -> None:
        """Wait for a turn: a free one, or the next one freed after those asked for before."""
        with self._held_lock:
            if self._free_turns > 0 and not self._turn_waiters:
                self._free_turns -= 1
                self._waiting -= 1
                return
            handed = threading.Event()
            self._turn_waiters.append(handed)
        handed.wait()  # _give_turn counted it

    def _give_turn(self) -> None:
        with self._held_lock:
            if self._turn_waiters:
                self._waiting -= 1
                self._turn_waiters.popleft().set()
            else:
                self._free_turns += 1

    def _run_borrowed(self, execution_id: str) -> None:
        """A run whose turn `put` took for the command's thread, which now runs it."""
        try:
            if not self._stopping and self._execute is not None:
                self._run(self._execute, execution_id)
        finally:
            self._give_turn()
            with self._borrowed_done:
                self._borrowed -= 1
                self._borrowed_done.notify_all()

    def _run(self, execute: Callable[[str], None], execution_id: str) -> None:
        try:
            execute(execution_id)
        except AtCapacity:
            # Its creator runs all it may: take the next one; a sweeper enqueues this one
            # again.
            logger.debug("execution %s held back: its creator runs all it may", execution_id)
        except Exception:
            logger.exception("execution %s failed in its worker thread", execution_id)
        finally:
            with self._held_lock:
                self._held[execution_id] -= 1
                if self._held[execution_id] <= 0:
                    del self._held[execution_id]


# The runs a socket's command queued with a turn free, while it runs (`runs_after_reply`).
_after_reply = threading.local()


@contextlib.contextmanager
def runs_after_reply() -> Iterator[None]:
    """Run in this thread, as the block ends, the executions the block queued in the
    in-process queue while one of its turns was free (else a worker thread takes them).

    For a socket's command thread (websocket.in_thread), which sends its reply on its way at
    the block's end: the run then needs no worker thread woken for it, a futex wake-up and a
    thread switch less (issue 14). Elsewhere, and in distributed mode, nothing changes.
    """
    deferred: list[tuple[_LocalQueue, str]] = []
    _after_reply.deferred = deferred
    try:
        yield
    finally:
        _after_reply.deferred = None  # what these runs queue (a hand-back) goes to the workers
        for local, execution_id in deferred:
            local._run_borrowed(execution_id)


def message_id(execution_id: str, attempt: int) -> str:
    """The name of the message that starts an execution's attempt `attempt` (Redis)."""
    return f"{execution_id}.{attempt}"


def _join(threads: Sequence[threading.Thread], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


class WakingRedisBroker(RedisBroker):
    """A RedisBroker whose idle consumers are woken by a pub/sub message sent with each enqueue.

    Dramatiq's Redis consumer polls an empty queue with a back-off up to the worker timeout,
    which costs 4-70 ms per hand-off (shared/reference/queue-latency.md). Here an idle consumer
    waits on an event instead, set by one pub/sub listener per process, so the hand-off takes
    about one Redis round trip while the idle poll can stay slow (LIVECODE_BROKER_POLL_MS).
    """

    def __init__(self, *, idle_poll_ms: int, **options: Any) -> None:
        super().__init__(**options)
        # How long an idle consumer waits for a wake-up before it looks in Redis anyway.
        self.idle_poll_s = idle_poll_ms / 1000
        self.wake_channel = f"{self.namespace}:wake"
        self._wake_events: dict[str, list[threading.Event]] = {}
        self._listener: threading.Thread | None = None
        self._listening: Any = None  # the listener's PubSub, for close() to end it
        self._closed = threading.Event()
        self._lock = threading.Lock()
        # The dispatch script called straight on connections of the broker's own: three calls a
        # run (enqueue, fetch, ack), each half the CPU of redis-py's script object (issue 14).
        self._commands = PackedCommands(self.client, f"{self.namespace}:broker")
        # Per queue, (fetches so far, messages the queue held after the last): whether an ack
        # must look again (_WakingConsumer).
        self.fetched: dict[str, tuple[int, int]] = {}

    def close(self) -> None:
        """Close Redis connections, the wake-up listener's included: it stops, not retries."""
        self._closed.set()
        with self._lock:
            listening = self._listening
        if listening is not None:
            with contextlib.suppress(Exception):
                listening.close()  # the listener's blocked read fails, and it sees _closed
        if self._listener is not None and self._listener is not threading.current_thread():
            self._listener.join(5.0)
        self._commands.close()
        super().close()

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def enqueue(
        self, message: dramatiq.Message[Any], *, delay: int | None = None
    ) -> dramatiq.Message[Any]:
        """Enqueue under the message's own ``redis_message_id`` (Dramatiq's parent draws a
        random one), so that `missing` can look it up; then wake the idle consumers."""
        if delay is not None:
            raise RuntimeError("livecode enqueues no delayed messages")
        redis_id = message.options.get("redis_message_id") or str(uuid.uuid4())
        message = message.copy(options={"redis_message_id": redis_id})
        self.emit_before("enqueue", message, delay)
        self._enqueue_and_wake(message.queue_name, redis_id, message.encode())
        self.emit_after("enqueue", message, delay)
        return message

    def _enqueue_and_wake(self, queue_name: str, redis_id: str, data: bytes) -> None:
        """Dramatiq's enqueue (its dispatch script, called as `do_enqueue` calls it) and the
        wake-up, in that order, in one round trip: one pipeline where there were two
        commands, each a wait on Redis for the web process's thread (issue 14)."""
        arguments = [
            "enqueue",
            current_millis(),
            queue_name,
            self.broker_id,
            self.heartbeat_timeout,
            self.dead_message_ttl,
            self._should_do_maintenance("enqueue"),
            self._max_unpack_size(),
            redis_id,
            data,
        ]
        enqueued, _ = self._commands.call(
            pack(b"EVALSHA", self.scripts["dispatch"].sha, 1, self.namespace, *arguments),
            pack(b"PUBLISH", self.wake_channel, queue_name),
        )
        if isinstance(enqueued, redis.exceptions.NoScriptError):
            # A Redis that lost its scripts (restarted without them): Dramatiq's own call
            # loads the script again.
            self.do_enqueue(queue_name, redis_id, data)
            self.client.publish(self.wake_channel, queue_name)
        elif isinstance(enqueued, Exception):
            raise enqueued

    def _dispatch(self, command: str) -> Callable[..., Any]:
        """Dramatiq's `do_<command>` (fetch, ack, ...): its dispatch script, called as Dramatiq
        calls it, on the broker's own connections."""
        script = self.scripts["dispatch"]
        keys = [self.namespace]

        def do_dispatch(queue_name: str, *args: Any) -> Any:
            arguments = [
                command,
                current_millis(),
                queue_name,
                self.broker_id,
                self.heartbeat_timeout,
                self.dead_message_ttl,
                self._should_do_maintenance(command),
                self._max_unpack_size(),
                *args,
            ]
            call = pack(b"EVALSHA", script.sha, 1, *keys, *arguments)
            if command == "fetch" and args[0] > 0:  # (a fetch of none is a heartbeat)
                # With the queue's length after it, in the same round trip.
                reply, left = self._commands.call(call, pack(b"LLEN", f"{keys[0]}:{queue_name}"))
                fetches, _ = self.fetched.get(queue_name, (0, 0))
                self.fetched[queue_name] = (fetches + 1, left if isinstance(left, int) else 1)
            else:
                (reply,) = self._commands.call(call)
            if isinstance(reply, redis.exceptions.NoScriptError):
                # A Redis that lost its scripts (restarted without them): the script object
                # loads it again.
                return script(args=arguments, keys=keys)
            if isinstance(reply, Exception):
                raise reply
            return reply

        return do_dispatch

    def missing(self, queue_name: str, due: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The (execution id, attempt) pairs whose message is not stored any more: neither
        waiting nor fetched (a message stays in the hash until it is acknowledged)."""
        if not due:
            return []
        messages = f"{self.namespace}:{queue_name}.msgs"
        with self.client.pipeline(transaction=False) as pipe:
            for execution_id, attempt in due:
                pipe.hexists(messages, message_id(execution_id, attempt))
            found = pipe.execute()
        return [pair for pair, exists in zip(due, found, strict=True) if not exists]

    def maintain(self, queue_name: str) -> None:
        """Run Dramatiq's queue maintenance now: the messages held by consumers that stopped
        beating (a killed worker) go back to the queue. Dramatiq runs it on 0.1 % of fetches."""
        self.do_maintain(queue_name)

    def _should_do_maintenance(self, command: str) -> int:
        if command == "maintain":  # not a command of the script: it only maintains
            return 1
        return int(super()._should_do_maintenance(command))

    def wake_event(self, queue_name: str) -> threading.Event:
        """An event set whenever a message is enqueued on `queue_name` by any process."""
        event = threading.Event()
        with self._lock:
            self._wake_events.setdefault(queue_name, []).append(event)
            if self._listener is None:
                self._listener = threading.Thread(
                    target=self._listen, name="broker-wake", daemon=True
                )
                self._listener.start()
        return event

    def wake_consumers(self) -> None:
        """Wake every consumer of this process, as an enqueue on its queue would."""
        with self._lock:
            events = [event for events in self._wake_events.values() for event in events]
        for event in events:
            event.set()

    def forget_wake_event(self, queue_name: str, event: threading.Event) -> None:
        """Stop setting `event` (its consumer is closed: Dramatiq makes a new one after each
        lost connection)."""
        with self._lock:
            events = self._wake_events.get(queue_name, [])
            if event in events:
                events.remove(event)

    def _listen(self) -> None:
        while not self._closed.is_set():
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                with self._lock:
                    self._listening = pubsub
                if self._closed.is_set():
                    return
                pubsub.subscribe(self.wake_channel)
                for message in pubsub.listen():
                    queue_name = message["data"].decode()
                    with self._lock:
                        events = list(self._wake_events.get(queue_name, ()))
                    for event in events:
                        event.set()
            except Exception as exc:
                if self._closed.is_set():
                    return  # close() ended the read, however it failed
                if not isinstance(exc, redis.RedisError):
                    raise
                # Consumers keep polling at the idle interval meanwhile; nothing is lost.
                logger.warning("broker wake-up listener lost Redis (%s); retrying", exc)
                self._closed.wait(1.0)


class _WakingConsumer(_RedisConsumer):
    def __init__(
        self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int
    ) -> None:
        # The parent's own back-off sleep is kept to 1 ms; the idle wait happens on the event.
        super().__init__(broker, queue_name, prefetch, 1)
        self.idle_s = broker.idle_poll_s
        self.wake = broker.wake_event(queue_name)
        self._wait_first = False
        self._beat_at = time.monotonic() + BROKER_HEARTBEAT_S
        # Whether a message may wait in Redis for a slot of ours: then an ack wakes us.
        self._look_on_ack = False

    def __next__(self) -> Any:
        if not self.message_cache:
            if self._wait_first:
                self.wake.wait(self.idle_s)
            self.wake.clear()  # before looking: a wake-up after this look stays set
            # Set before looking at the slots, as an ack frees its slot before reading this:
            # a wake-up that finds no slot free is passed on to the next ack, never lost.
            self._look_on_ack = True
            if self.outstanding_message_count >= self.prefetch:
                self._beat()
        fetches, _ = self.broker.fetched.get(self.queue_name, (0, 0))
        message = super().__next__()  # asks Redis only when nothing is at hand
        now_fetches, left = self.broker.fetched.get(self.queue_name, (0, 0))
        if now_fetches != fetches:
            # It fetched: only messages still in the queue can wait for a slot.
            self._look_on_ack = left > 0
        # Nothing left at hand means the queue was empty or we hold all we may: look again
        # when a message is enqueued (by any process) or one of ours finishes, not at once.
        self._wait_first = not self.message_cache
        return message

    def _beat(self) -> None:
        """Busy, so not fetching: say that this consumer lives (a fetch of no message)."""
        now = time.monotonic()
        if now >= self._beat_at:
            self._beat_at = now + BROKER_HEARTBEAT_S
            self.broker.do_fetch(self.queue_name, 0)

    def close(self) -> None:
        self.broker.forget_wake_event(self.queue_name, self.wake)
        super().close()

    def ack(self, message: Any) -> None:
        super().ack(message)
        self._slot_freed()

    def nack(self, message: Any) -> None:
        super().nack(message)
        self._slot_freed()

    def _slot_freed(self) -> None:
        """Look again (worker threads call this) only when a message may wait for the slot:
        one was left in the queue by the last fetch, or a wake-up found every slot taken.
        Else the queue was empty and the next enqueue wakes the consumer: a fetch at every
        ack found nothing most times (a Lua script and a thread wake-up a run, issue 14)."""
        if self._look_on_ack:
            self._look_on_ack = False
            self.wake.set()
