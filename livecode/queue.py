"""The queue: how a queued execution reaches a worker thread's `Executor.execute(execution_id)`.

Distributed: a Dramatiq message on Redis and the `execute` actor; web processes only send,
worker processes consume with Dramatiq worker threads. Embedded: an in-process queue read by
worker threads of the server itself (`_LocalQueue`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.middleware import Middleware, TimeLimit

from livecode.config import Settings
from livecode.errors import unavailable_on

logger = logging.getLogger(__name__)

QUEUE_NAME = "executions"
# Dramatiq's TimeLimit is only a backstop: the sandbox owns the deadline and kills the tree.
BACKSTOP_MARGIN_S = 60


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
            url=settings.redis_url, namespace="livecode-dramatiq", middleware=middleware
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

    def enqueue(self, execution_id: str) -> None:
        """Hand an execution to whichever worker is free. Raises Unavailable when Redis is down."""
        if self._local is not None:
            self._local.put(execution_id)
            return
        with unavailable_on(
            redis.RedisError, message="the queue (Redis) is unavailable", retry_after=5.0
        ):
            self.actor.send(execution_id)

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
                worker_timeout=self.settings.broker_poll_ms,
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

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop consuming (letting running executions finish within `timeout_s`), then close."""
        if self._local is not None:
            self._local.stop(timeout_s)
            return
        if self._worker is not None:
            self._worker.stop(timeout=int(timeout_s * 1000))
            self._worker = None
        assert self.broker is not None
        self.broker.close()

    def _receive(self, execution_id: str) -> None:
        if self._execute is None:
            raise RuntimeError("an execute message reached a process without an executor")
        self._execute(execution_id)

    def describe(self) -> dict[str, Any]:
        """Broker kind, for health answers."""
        return {"broker": "redis" if self.settings.redis_url else "in-process"}


class _LocalQueue:
    """Embedded mode's broker: execution ids handed straight to this process's worker threads.

    Not Dramatiq's in-process StubBroker, which is meant for tests: its consumer thread put one
    more thread hand-off, a message encoding and the middleware in every run's path, 4-5 % of
    embedded runs/s and 0.3 ms of latency (bench A/B). Nothing here outlives the process, as
    with that broker: at the next start the store's QUEUED executions are queued again.
    """

    def __init__(self) -> None:
        self._pending: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._stopping = False

    @property
    def threads(self) -> int:
        return len(self._workers)

    def put(self, execution_id: str) -> None:
        self._pending.put(execution_id)

    def start(self, execute: Callable[[str], None], threads: int) -> None:
        for index in range(threads):
            worker = threading.Thread(
                target=self._work, args=(execute,), name=f"livecode-worker-{index}", daemon=True
            )
            worker.start()
            self._workers.append(worker)

    def stop(self, timeout_s: float) -> None:
        """Take nothing more; wait up to `timeout_s` for the running executions to end."""
        self._stopping = True
        for _ in self._workers:
            self._pending.put(None)  # wakes a waiting thread
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._workers.clear()

    def _work(self, execute: Callable[[str], None]) -> None:
        while True:
            execution_id = self._pending.get()
            if execution_id is None or self._stopping:
                return  # one left queued stays QUEUED in the store: the next start runs it
            try:
                execute(execution_id)
            except Exception:
                logger.exception("execution %s failed in its worker thread", execution_id)


class WakingRedisBroker(RedisBroker):
    """A RedisBroker whose idle consumers are woken by a pub/sub message sent with each enqueue.

    Dramatiq's Redis consumer polls an empty queue with a back-off up to the worker timeout,
    which costs 4-70 ms per hand-off (shared/reference/queue-latency.md). Here an idle consumer
    waits on an event instead, set by one pub/sub listener per process, so the hand-off takes
    about one Redis round trip while the idle poll can stay slow (LIVECODE_BROKER_POLL_MS).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.wake_channel = f"{self.namespace}:wake"
        self._wake_events: dict[str, list[threading.Event]] = {}
        self._listener: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def enqueue(
        self, message: dramatiq.Message[Any], *, delay: int | None = None
    ) -> dramatiq.Message[Any]:
        enqueued = super().enqueue(message, delay=delay)
        if delay is None:
            self.client.publish(self.wake_channel, enqueued.queue_name)
        return enqueued

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

    def _listen(self) -> None:
        while True:
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.wake_channel)
                for message in pubsub.listen():
                    queue_name = message["data"].decode()
                    for event in self._wake_events.get(queue_name, ()):
                        event.set()
            except redis.RedisError as exc:
                # Consumers keep polling at the idle interval meanwhile; nothing is lost.
                logger.warning("broker wake-up listener lost Redis (%s); retrying", exc)
                time.sleep(1.0)


class _WakingConsumer(_RedisConsumer):
    def __init__(
        self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int
    ) -> None:
        # The parent's own back-off sleep is kept to 1 ms; the idle wait happens on the event.
        super().__init__(broker, queue_name, prefetch, 1)
        self.idle_s = timeout / 1000
        self.wake = broker.wake_event(queue_name)
        self._wait_first = False

    def __next__(self) -> Any:
        if not self.message_cache:
            if self._wait_first:
                self.wake.wait(self.idle_s)
            self.wake.clear()  # before looking: a wake-up after this look stays set
        message = super().__next__()  # asks Redis only when nothing is at hand
        # Nothing left at hand means the queue was empty or we hold all we may: look again
        # when a message is enqueued (by any process) or one of ours finishes, not at once.
        self._wait_first = not self.message_cache
        return message

    def ack(self, message: Any) -> None:
        super().ack(message)
        self.wake.set()  # a slot is free: look again (worker threads call this)

    def nack(self, message: Any) -> None:
        super().nack(message)
        self.wake.set()
