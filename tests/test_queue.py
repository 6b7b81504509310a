"""The queue: messages reach worker threads, in-process and through real Redis."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from livecode import websocket
from livecode.config import Settings
from livecode.queue import Queue, WakingRedisBroker, runs_after_reply
from tests.utils import TIMEOUT, wait_until


def settings_for(kind: str, redis_url: str | None) -> Settings:
    return Settings(redis_url=redis_url if kind == "redis" else None, broker_poll_ms=1000)


@pytest.mark.parametrize("kind", ["in-process", "redis"])
def test_enqueued_executions_reach_a_worker_thread(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Every queued execution reaches a worker thread, in process and through Redis."""
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    sender, consumer = Queue(settings_for(kind, redis_url)), None
    received: list[str] = []
    all_received = threading.Event()

    def execute(execution_id: str) -> None:
        received.append(execution_id)
        if len(received) == 5:
            all_received.set()

    try:
        if kind == "redis":
            # A separate Queue, as in a separate worker process, consumes what `sender` sends.
            consumer = Queue(settings_for(kind, redis_url))
            consumer.start_workers(execute, threads=2)
        else:
            sender.start_workers(execute, threads=2)
        for number in range(5):
            sender.enqueue(f"execution-{number}")
        assert all_received.wait(TIMEOUT)
        assert sorted(received) == [f"execution-{n}" for n in range(5)]
    finally:
        if consumer is not None:
            consumer.close()
        sender.close()


def test_enqueue_wakes_idle_consumers_of_other_processes(redis_url: str) -> None:
    """An idle consumer waits on a wake-up event that every enqueue sets, not on a poll."""
    consumer_side = Queue(settings_for("redis", redis_url))
    sender = Queue(settings_for("redis", redis_url))
    try:
        broker = consumer_side.broker
        assert isinstance(broker, WakingRedisBroker)
        woken = broker.wake_event("executions")
        # The listener subscribes in the background; enqueue until it has.
        for _ in range(int(TIMEOUT * 10)):
            sender.enqueue("wake-me")
            if woken.wait(0.1):
                break
        assert woken.is_set()
    finally:
        broker.client.delete(f"{broker.namespace}:executions")
        sender.close()
        consumer_side.close()


def test_messages_that_wait_for_a_slot_start_as_slots_free(redis_url: str) -> None:
    """A consumer whose threads are all busy leaves messages in Redis: an ack fetches them
    when the last fetch left some, or when a wake-up found no slot free (else they would wait
    for the idle poll: ten minutes here, past the test's timeout)."""
    settings = Settings(redis_url=redis_url, broker_poll_ms=600_000)
    consumer, sender = Queue(settings), Queue(settings)
    started: list[str] = []
    all_started, release = threading.Event(), threading.Event()

    def execute(execution_id: str) -> None:
        started.append(execution_id)
        if len(started) == 8:
            all_started.set()
        release.wait(TIMEOUT)

    try:
        for number in range(4):  # the first fetch takes two and leaves two
            sender.enqueue(f"waiting-{number}")
        consumer.start_workers(execute, threads=2)
        wait_until(lambda: len(started) == 2, "both threads busy")
        for number in range(4, 8):  # their wake-ups find no slot free
            sender.enqueue(f"waiting-{number}")
        release.set()
        assert all_started.wait(TIMEOUT)
        assert sorted(started) == [f"waiting-{number}" for number in range(8)]
    finally:
        consumer.close()
        sender.close()


def test_closing_the_queue_stops_its_wake_up_listener(redis_url: str) -> None:
    """The listener (a thread of the broker's) ends with the queue: it does not go on
    retrying, and logging that it lost Redis, for as long as the process lives."""
    queue = Queue(settings_for("redis", redis_url))
    broker = queue.broker
    assert isinstance(broker, WakingRedisBroker)
    broker.wake_event("executions")
    wait_until(lambda: broker._listening is not None, "the listener subscribed")
    listener = broker._listener
    assert listener is not None and listener.is_alive()
    queue.close()
    listener.join(TIMEOUT)
    assert not listener.is_alive()


def test_enqueue_reaches_a_redis_that_lost_its_scripts(redis_url: str) -> None:
    """An enqueue sends Dramatiq's script by its hash; a Redis that no longer has it (flushed,
    restarted) gets it loaded again, and the message arrives and wakes the consumer all the
    same."""
    received = threading.Event()
    consumer = Queue(settings_for("redis", redis_url))
    sender = Queue(settings_for("redis", redis_url))
    try:
        consumer.start_workers(lambda execution_id: received.set(), threads=1)
        assert sender.broker is not None
        sender.broker.client.script_flush()
        sender.enqueue("after-a-flush")
        assert received.wait(TIMEOUT)
        wait_until(lambda: sender.missing([("after-a-flush", 1)]) != [], "the message is acked")
    finally:
        consumer.close()
        sender.close()


def test_in_process_close_lets_the_running_execution_finish_and_starts_no_other() -> None:
    """Embedded shutdown: what runs ends; what is still queued stays QUEUED in the store, for
    the next start to run."""
    in_process = Queue(settings_for("in-process", None))
    started: list[str] = []
    finished: list[str] = []
    running, release = threading.Event(), threading.Event()

    def execute(execution_id: str) -> None:
        started.append(execution_id)
        running.set()
        release.wait(TIMEOUT)
        finished.append(execution_id)

    in_process.start_workers(execute, threads=1)
    assert in_process.worker_threads == 1
    for number in range(3):
        in_process.enqueue(f"execution-{number}")
    assert running.wait(TIMEOUT)
    closing = threading.Thread(target=in_process.close, kwargs={"timeout_s": TIMEOUT})
    closing.start()
    local = in_process._local
    assert local is not None
    wait_until(lambda: local._stopping, "close() has begun: it takes no more executions")
    release.set()
    closing.join(TIMEOUT)
    assert not closing.is_alive()
    assert started == finished == ["execution-0"]
    assert in_process.worker_threads == 0


def test_in_process_runs_queued_by_commands_run_in_their_threads_within_the_turns() -> None:
    """A command that queues a run while a worker turn is free runs it in its own thread once
    the command is done (runs_after_reply); never more runs at once than worker threads, the
    rest wait for a turn; close() waits for a command's run too."""
    in_process = Queue(settings_for("in-process", None))
    lock = threading.Lock()
    threads: dict[str, str] = {}
    at_once = [0, 0]  # now, most
    release = threading.Event()

    def execute(execution_id: str) -> None:
        with lock:
            threads[execution_id] = threading.current_thread().name
            at_once[0] += 1
            at_once[1] = max(at_once)
        release.wait(TIMEOUT)
        if execution_id == "execution-9":
            time.sleep(0.05)  # handed back, it takes a while to end: close() waits for it
        with lock:
            at_once[0] -= 1

    def command(number: int, done: list[str]) -> None:
        with runs_after_reply():
            in_process.enqueue(f"execution-{number}")
            done.append(f"execution-{number}")

    in_process.start_workers(execute, threads=2)
    done: list[str] = []
    commands = [
        threading.Thread(target=command, args=(n, done), name=f"command-{n}") for n in range(4)
    ]
    for thread in commands:
        thread.start()
    wait_until(lambda: len(threads) == 2, "two runs have started")
    assert sorted(done) == [f"execution-{n}" for n in range(4)]
    release.set()
    wait_until(lambda: len(threads) == 4, "every run has started")
    for thread in commands:
        thread.join(TIMEOUT)
    assert at_once[1] == 2
    # Those that found a turn free ran in their command's thread, the others in a worker's.
    by_command = [n for n in range(4) if threads[f"execution-{n}"] == f"command-{n}"]
    assert len(by_command) >= 2
    assert all(
        threads[f"execution-{n}"].startswith("livecode-worker-")
        for n in range(4)
        if n not in by_command
    )
    release.clear()
    late = threading.Thread(target=command, args=(9, done), name="command-9")
    late.start()
    wait_until(lambda: "execution-9" in threads, "a command's run has started")
    assert threads["execution-9"] == "command-9"
    # No grace: close() finds the command's run still going, has it handed back (here: ended),
    # and waits for it.
    in_process.close(timeout_s=0.0, on_timeout=release.set)
    assert release.is_set(), "close() did not see the command's run"
    assert at_once[0] == 0, "close() returned before the command's run ended"
    late.join(TIMEOUT)


def test_in_process_a_command_does_not_overtake_a_run_waiting_for_a_turn() -> None:
    """Queued runs keep their order: a command finding a turn free while a run queued before
    waits for one (as for a moment after a run ends) queues its run behind it."""
    in_process = Queue(settings_for("in-process", None))
    ran_in: dict[str, str] = {}
    done = threading.Event()

    def execute(execution_id: str) -> None:
        ran_in[execution_id] = threading.current_thread().name
        done.set()

    in_process.start_workers(execute, threads=1)
    local = in_process._local
    assert local is not None
    with local._held_lock:
        local._waiting += 1  # a run queued before, not yet given the free turn

    def command() -> None:
        with runs_after_reply():
            in_process.enqueue("execution-late")

    late = threading.Thread(target=command, name="command-late")
    late.start()
    late.join(TIMEOUT)
    assert done.wait(TIMEOUT)
    assert ran_in["execution-late"].startswith("livecode-worker-")
    in_process.close()


def test_in_process_socket_commands_go_through_while_runs_they_queued_fill_the_worker_threads() -> (
    None
):
    """However many worker threads there are, the runs that go on in the threads of the
    socket commands that queued them never take every thread the sockets' commands need: a
    stdin or a cancel for those runs still gets through."""
    in_process = Queue(settings_for("in-process", None))
    runs = websocket.COMMAND_THREADS + 1  # a turn for each, more than there are command threads
    release = threading.Event()
    started: list[str] = []

    def execute(execution_id: str) -> None:
        started.append(execution_id)
        release.wait(3 * TIMEOUT)  # as a run that waits for its stdin, longer than the test

    async def commands() -> None:
        replies = [websocket.in_thread(in_process.enqueue, f"execution-{n}") for n in range(runs)]
        await asyncio.wait_for(asyncio.gather(*replies), TIMEOUT)
        await asyncio.to_thread(wait_until, lambda: len(started) == runs, "every run started")
        # The command that lets the runs end (the stdin they wait for) gets a thread.
        await asyncio.wait_for(websocket.in_thread(release.set), TIMEOUT)

    in_process.start_workers(execute, threads=runs)
    try:
        asyncio.run(commands())
    finally:
        release.set()
        in_process.close(timeout_s=TIMEOUT)


def test_in_process_a_run_waiting_for_a_turn_gets_the_next_one_free() -> None:
    """A worker thread that took a run while a command's run held the turn it needs runs it
    with the next turn that frees: the worker thread that freed it does not keep it for a run
    queued later (which would overtake it for as long as the command's run goes on)."""
    in_process = Queue(settings_for("in-process", None))
    local = in_process._local
    assert local is not None
    gates = {name: threading.Event() for name in ("borrowed", "first", "waiting", "later")}
    started: list[str] = []

    def execute(execution_id: str) -> None:
        started.append(execution_id)
        gates[execution_id].wait(TIMEOUT)

    def command() -> None:
        with runs_after_reply():
            in_process.enqueue("borrowed")

    in_process.start_workers(execute, threads=2)
    holder = threading.Thread(target=command, name="command")
    try:
        holder.start()
        wait_until(lambda: started == ["borrowed"], "the command's run has started")
        in_process.enqueue("first")  # the other turn
        wait_until(lambda: started == ["borrowed", "first"], "a worker thread runs one")
        in_process.enqueue("waiting")  # taken by the idle worker thread, which has no turn
        wait_until(lambda: local._pending.empty(), "the run waiting for a turn was taken")
        in_process.enqueue("later")
        gates["first"].set()  # its turn frees
        wait_until(lambda: len(started) == 3, "a third run has started")
        assert started[2] == "waiting"
    finally:
        for gate in gates.values():
            gate.set()
        holder.join(TIMEOUT)
        in_process.close(timeout_s=TIMEOUT)
