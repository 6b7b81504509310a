"""The bus, local and Redis: history, delivery across threads and processes, expiry."""

from __future__ import annotations

import asyncio
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from livecode.bus import (
    Bus,
    BusUnavailable,
    control_channel,
    create_bus,
    execution_channel,
    session_channel,
)
from livecode.bus.local import LocalBus
from livecode.bus.redis import PackedCommands, RedisBus, pack
from tests.proxy import proxy_to
from tests.utils import (
    TIMEOUT,
    free_port,
    kill_redis_clients,
    own_redis,
    require_redis,
    wait_until,
)


def output(seq: int) -> dict[str, Any]:
    return {"type": "output", "execution_id": "e1", "stream": "stdout", "seq": seq, "data": "x"}


def test_channel_names() -> None:
    """Channel names are the SPEC's."""
    assert execution_channel("a") == "execution:a"
    assert control_channel("a") == "control:a"
    assert session_channel("a") == "session:a"


def test_create_bus_picks_the_backend() -> None:
    """No Redis URL means the in-process bus."""
    assert isinstance(create_bus(None), LocalBus)
    distributed = create_bus("redis://127.0.0.1:1")
    assert isinstance(distributed, RedisBus)
    distributed.close()


def test_history_keeps_publish_order(bus: Bus) -> None:
    """Kept events come back in the order they were published."""
    for seq in range(1, 51):
        bus.publish("execution:e1", output(seq))
    assert bus.history("execution:e1") == [output(seq) for seq in range(1, 51)]
    assert bus.history("execution:other") == []


def test_keep_false_is_not_in_history(bus: Bus) -> None:
    """keep=False delivers without keeping."""
    received: queue.Queue[dict[str, Any]] = queue.Queue()
    with bus.listen("control:e1", received.put):
        bus.publish("control:e1", {"type": "cancel"}, keep=False)
        assert received.get(timeout=TIMEOUT) == {"type": "cancel"}
    assert bus.history("control:e1") == []


def test_expire_drops_history(bus: Bus) -> None:
    """After expire(), the history is gone once the delay has passed."""
    bus.publish("execution:e1", output(1))
    bus.expire("execution:e1", 0.05)
    wait_until(lambda: bus.history("execution:e1") == [], "the history expired")


def test_a_last_event_kept_for_a_while_shortens_the_history(bus: Bus) -> None:
    """publish(keep_for_s=...) keeps the whole history, then drops it after that delay."""
    bus.publish("execution:e1", output(1))
    bus.publish("execution:e1", {"type": "finished"}, keep_for_s=0.2)
    assert bus.history("execution:e1") == [output(1), {"type": "finished"}]
    wait_until(lambda: bus.history("execution:e1") == [], "the history expired")


def test_expire_zero_drops_history_now(bus: Bus) -> None:
    """expire(channel, 0) drops it at once."""
    bus.publish("execution:e1", output(1))
    bus.expire("execution:e1", 0)
    assert bus.history("execution:e1") == []


def test_the_in_process_bus_remembers_deadlines_by_channel_not_by_event() -> None:
    """A busy embedded server publishes thousands of kept events a second, each pushing its
    channel's deadline an hour on: what the bus keeps to expire them grows with the channels,
    and the deadline of the last event still holds (an earlier one, set since, too)."""
    bus = LocalBus(history_ttl_s=1.0)
    for seq in range(1, 2001):
        bus.publish("execution:busy", output(seq))
    bus.publish("execution:short", output(1))
    bus.expire("execution:short", 0.05)
    assert len(bus._expiry_heap) <= 3, len(bus._expiry_heap)
    wait_until(lambda: bus.history("execution:short") == [], "the shortened history expired")
    assert len(bus.history("execution:busy")) == 2000
    bus.publish("execution:busy", output(2001))  # its deadline moves on again
    wait_until(lambda: bus.history("execution:busy") == [], "the busy history expired")
    assert len(bus._expiry_heap) <= 1, bus._expiry_heap


def test_listen_from_a_thread_receives(bus: Bus) -> None:
    """A worker thread listening on control:{id} gets what another thread publishes, in order,
    and nothing once its block has ended."""
    received: queue.Queue[dict[str, Any]] = queue.Queue()
    ready, done = threading.Event(), threading.Event()

    def worker() -> None:
        with bus.listen("control:e1", received.put):
            ready.set()
            done.wait(TIMEOUT)

    thread = threading.Thread(target=worker)
    thread.start()
    assert ready.wait(TIMEOUT)
    for n in range(3):
        bus.publish("control:e1", {"type": "stdin", "data": str(n)}, keep=False)
    got = [received.get(timeout=TIMEOUT) for _ in range(3)]
    done.set()
    thread.join(TIMEOUT)
    assert got == [{"type": "stdin", "data": str(n)} for n in range(3)]
    bus.publish("control:e1", {"type": "stdin", "data": "late"}, keep=False)
    with pytest.raises(queue.Empty):
        received.get(timeout=0.1)


def test_a_failing_listener_does_not_break_publish(bus: Bus) -> None:
    """An exception in on_message is logged; the publisher and later events carry on."""
    received: queue.Queue[dict[str, Any]] = queue.Queue()

    def on_message(event: dict[str, Any]) -> None:
        received.put(event)
        if event["n"] == 0:
            raise ValueError("listener bug")

    with bus.listen("control:e1", on_message):
        bus.publish("control:e1", {"n": 0}, keep=False)
        bus.publish("control:e1", {"n": 1}, keep=False)
        assert [received.get(timeout=TIMEOUT) for _ in range(2)] == [{"n": 0}, {"n": 1}]


@pytest.mark.anyio
async def test_subscriber_receives_from_other_threads(bus: Bus) -> None:
    """Events published from several threads all reach the loop, each thread's in order."""
    subscriber = bus.subscriber()
    await subscriber.subscribe("execution:a", "execution:b")
    threads = [
        threading.Thread(
            target=lambda name=name: [
                bus.publish(f"execution:{name}", {"n": n}) for n in range(200)
            ]
        )
        for name in ("a", "b")
    ]
    for thread in threads:
        thread.start()
    received: dict[str, list[int]] = {"execution:a": [], "execution:b": []}
    with anyio.fail_after(TIMEOUT):
        async for channel, event in subscriber:
            received[channel].append(event["n"])
            if sum(map(len, received.values())) == 400:
                break
    for thread in threads:
        thread.join()
    await subscriber.aclose()
    assert received == {"execution:a": list(range(200)), "execution:b": list(range(200))}


@pytest.mark.anyio
async def test_subscriber_stops_after_unsubscribe_and_aclose(bus: Bus) -> None:
    """Unsubscribed channels deliver nothing more; aclose() ends the iteration."""
    subscriber = bus.subscriber()
    await subscriber.subscribe("session:s1", "session:s2")
    await subscriber.unsubscribe("session:s1")
    bus.publish("session:s1", {"n": 1}, keep=False)
    bus.publish("session:s2", {"n": 2}, keep=False)
    with anyio.fail_after(TIMEOUT):
        assert await subscriber.__anext__() == ("session:s2", {"n": 2})
    await subscriber.aclose()
    await subscriber.aclose()
    assert [item async for item in subscriber] == []


@pytest.mark.anyio
async def test_subscribe_then_history_misses_nothing(bus: Bus) -> None:
    """Subscribed first, then history read: every event is in one or the other (or both)."""
    channel = "execution:race"
    publishing = _publishing(bus, channel)  # subscribe while the events are being published
    subscriber = bus.subscriber()
    await subscriber.subscribe(channel)
    history = await anyio.to_thread.run_sync(bus.history, channel)
    assert await _seqs_seen(subscriber, history, publishing) == set(range(1, PUBLISHED + 1))


PUBLISHED = 1000


def _publishing(bus: Bus, channel: str) -> threading.Thread:
    """A thread publishing PUBLISHED output events on the channel, once it has begun."""
    begun = threading.Event()

    def publisher() -> None:
        for seq in range(1, PUBLISHED + 1):
            bus.publish(channel, output(seq))
            begun.set()

    thread = threading.Thread(target=publisher)
    thread.start()
    assert begun.wait(TIMEOUT)
    return thread


async def _seqs_seen(
    subscriber: Any, history: list[dict[str, Any]], publishing: threading.Thread
) -> set[int]:
    """The seqs in the history and the subscription, once the subscription has them all."""
    seen = {event["seq"] for event in history}
    with anyio.fail_after(TIMEOUT):
        while len(seen) < PUBLISHED:
            _, event = await subscriber.__anext__()
            seen.add(event["seq"])
    publishing.join()
    await subscriber.aclose()
    return seen


@pytest.mark.anyio
async def test_publish_from_another_process_reaches_the_subscriber(redis_bus: RedisBus) -> None:
    """A worker process publishing on Redis reaches a subscriber in this process."""
    subscriber = redis_bus.subscriber()
    await subscriber.subscribe("execution:p1")
    script = (
        "import sys\n"
        "from livecode.bus.redis import RedisBus\n"
        "bus = RedisBus(sys.argv[1], prefix=sys.argv[2])\n"
        "for seq in range(1, 4):\n"
        "    bus.publish('execution:p1', {'type': 'output', 'seq': seq, 'pid': 'other'})\n"
    )
    url = require_redis()
    await anyio.run_process([sys.executable, "-c", script, url, redis_bus.prefix], check=True)
    with anyio.fail_after(TIMEOUT):
        received = [await subscriber.__anext__() for _ in range(3)]
    await subscriber.aclose()
    assert [event["seq"] for _, event in received] == [1, 2, 3]
    assert {channel for channel, _ in received} == {"execution:p1"}
    assert [event["seq"] for event in redis_bus.history("execution:p1")] == [1, 2, 3]


@pytest.mark.anyio
async def test_subscriber_resyncs_after_a_lost_connection(redis_bus: RedisBus) -> None:
    """When Redis drops the subscriber's connection, it subscribes again and says RESYNC."""
    subscriber = redis_bus.subscriber()
    await subscriber.subscribe("execution:k1")
    assert kill_redis_clients(f"{redis_bus.prefix}subscriber")
    with anyio.fail_after(TIMEOUT):
        assert await subscriber.__anext__() == ("execution:k1", {"type": "bus.resync"})
        redis_bus.publish("execution:k1", output(1))
        assert await subscriber.__anext__() == ("execution:k1", output(1))
    await subscriber.aclose()


@pytest.mark.anyio
async def test_a_history_read_sent_with_its_subscribe_misses_nothing(redis_bus: RedisBus) -> None:
    """The Redis subscriber's history read, asked for before its subscribe was confirmed (one
    write for both, as a follow sends them), still has or is followed by every event."""
    channel = "execution:together"
    subscriber = redis_bus.subscriber()
    await subscriber.subscribe("session:warm")  # an open connection, as a server's has
    publishing = _publishing(redis_bus, channel)
    subscribed = subscriber.subscribe_soon(channel)
    history = await subscriber.history(channel)
    assert subscribed.done()
    assert await _seqs_seen(subscriber, history, publishing) == set(range(1, PUBLISHED + 1))


@pytest.mark.anyio
async def test_a_channel_followed_again_before_its_unsubscribe_went_out(
    redis_bus: RedisBus,
) -> None:
    """An unsubscribe waits for the next command; subscribing again meanwhile keeps the
    channel, and an unsubscribed one yields nothing more, whenever Redis hears of it."""
    subscriber = redis_bus.subscriber()
    await subscriber.subscribe("session:again", "session:gone")
    subscriber.unsubscribe_soon("session:again")
    subscriber.unsubscribe_soon("session:gone")
    redis_bus.publish("session:gone", {"n": 0}, keep=False)
    await subscriber.subscribe("session:again")
    redis_bus.publish("session:gone", {"n": 1}, keep=False)
    redis_bus.publish("session:again", {"n": 2}, keep=False)
    with anyio.fail_after(TIMEOUT):
        assert await subscriber.__anext__() == ("session:again", {"n": 2})
    await subscriber.aclose()


@pytest.mark.anyio
async def test_followers_catching_up_at_once_keep_the_subscriber_connection() -> None:
    """History reads are answered on the subscriber's pub/sub connection, which Redis closes
    once its unread replies pass the pub/sub output limit: 40 followers catching up on a long
    run at once, while the loop is busy elsewhere, stay under it (reads wait their turn)."""
    with own_redis() as server:
        admin = server.client()
        admin.config_set("client-output-buffer-limit", "pubsub 16mb 16mb 0")
        admin.close()
        bus = RedisBus(server.url, prefix="livecode:test:catch-up:")
        for seq in range(1, 257):  # 1 MiB of output kept
            bus.publish("execution:long", {**output(seq), "data": "x" * 4096})
        subscriber = bus.subscriber()
        try:
            await subscriber.subscribe("execution:long")
            reads = [asyncio.ensure_future(subscriber.history("execution:long")) for _ in range(40)]
            await asyncio.sleep(0)  # the reads that may go out do
            time.sleep(1.0)  # the loop busy elsewhere: the replies wait in Redis
            with anyio.fail_after(TIMEOUT):
                histories = await asyncio.gather(*reads, return_exceptions=True)
            answers = [
                len(history) if isinstance(history, list) else repr(history)
                for history in histories
            ]
            assert answers == [256] * 40
        finally:
            with anyio.fail_after(TIMEOUT):
                await subscriber.aclose()
            bus.close()


def test_a_publish_outlives_a_redis_restart(redis_bus: RedisBus) -> None:
    """Publishing after Redis dropped the bus's connections and forgot its scripts (as a
    restart without persistence does) just works: nothing to retry for the caller."""
    redis_bus.publish("execution:r1", output(1))
    client = redis.Redis.from_url(require_redis())
    try:
        names = {f"{redis_bus.prefix}publisher"}
        ids = [info["id"] for info in client.client_list() if info["name"] in names]
        assert ids
        for client_id in ids:
            client.client_kill_filter(_id=client_id)
        client.script_flush()
    finally:
        client.close()
    redis_bus.publish("execution:r1", output(2))
    assert [event["seq"] for event in redis_bus.history("execution:r1")] == [1, 2]


def test_a_command_whose_reply_is_lost_runs_once(redis_url: str) -> None:
    """A command that ran in Redis but whose reply never came back fails to its caller, and is
    not sent again: Dramatiq's fetch run twice would leave messages held by a live worker."""
    key = "livecode:test:packed:once"
    direct = redis.Redis.from_url(redis_url)
    with proxy_to(redis_url, lose_replies_to=b"INCR") as proxy:
        proxied = redis.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/1")
        commands = PackedCommands(proxied, "livecode:test:packed")
        try:
            with pytest.raises(redis.ConnectionError):
                commands.call(pack(b"INCR", key))
            assert direct.get(key) == b"1"
        finally:
            commands.close()
            proxied.close()
            direct.delete(key)
            direct.close()


@pytest.fixture
def tls_redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of its own over TLS, its certificate signed by a CA of the test's: the
    URL names the CA file (`ssl_ca_certs`), as one for a self-hosted Redis does."""
    binary, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if binary is None or openssl is None:
        pytest.skip("needs redis-server and openssl")

    def run(*arguments: str) -> None:
        subprocess.run([openssl, *arguments], cwd=tmp_path, check=True, capture_output=True)

    run(
        *"req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=ca -keyout ca.key".split(),
        "-out",
        "ca.pem",
    )
    run(
        *"req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key".split(),
        "-out",
        "server.csr",
    )
    (tmp_path / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    run(
        *"x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1".split(),
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    )
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--tls-cert-file", "server.pem", "--tls-key-file", "server.key"]
        + ["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no", "--logfile", ""],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    url = f"rediss://localhost:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)

    def pings() -> bool:
        if process.poll() is not None:
            pytest.skip("redis-server without TLS")
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(pings, "the TLS redis-server answers")
        yield url
    finally:
        client.close()
        process.kill()
        process.wait()


@pytest.mark.anyio
async def test_a_rediss_url_with_its_own_ca_serves_followers(tls_redis_url: str) -> None:
    """`rediss://` with the CA in the URL (`ssl_ca_certs`): the server's subscriber verifies
    Redis with that CA, as publishing does, and followers get their events."""
    bus = RedisBus(tls_redis_url)
    subscriber = bus.subscriber()
    try:
        with anyio.fail_after(TIMEOUT):
            await subscriber.subscribe("execution:tls")
            bus.publish("execution:tls", output(1))
            assert await subscriber.history("execution:tls") == [output(1)]
            assert await subscriber.__anext__() == ("execution:tls", output(1))
    finally:
        await subscriber.aclose()
        bus.close()


def test_unreachable_redis_raises_bus_unavailable() -> None:
    """A down Redis gives BusUnavailable, not a redis-py error."""
    bus = RedisBus("redis://127.0.0.1:1")
    with pytest.raises(BusUnavailable):
        bus.ping()
    with pytest.raises(BusUnavailable):
        bus.publish("execution:e1", output(1))
    bus.close()


def test_listeners_hear_only_their_own_channel(bus: Bus) -> None:
    """Two executions' control channels listened at once, and one after the other."""
    first: queue.Queue[dict[str, Any]] = queue.Queue()
    second: queue.Queue[dict[str, Any]] = queue.Queue()
    with bus.listen("control:first", first.put), bus.listen("control:second", second.put):
        bus.publish("control:first", {"n": 1}, keep=False)
        bus.publish("control:second", {"n": 2}, keep=False)
        assert first.get(timeout=TIMEOUT) == {"n": 1}
        assert second.get(timeout=TIMEOUT) == {"n": 2}
    with bus.listen("control:second", second.put):
        bus.publish("control:first", {"n": "not mine"}, keep=False)
        bus.publish("control:second", {"n": "mine"}, keep=False)
        assert second.get(timeout=TIMEOUT) == {"n": "mine"}
    with pytest.raises(queue.Empty):
        first.get(timeout=0.2)


def test_redis_listen_is_for_control_channels(redis_bus: RedisBus) -> None:
    """The shared pattern subscription covers control channels only; others are refused."""
    with pytest.raises(ValueError), redis_bus.listen("execution:e1", lambda event: None):
        pass


def test_redis_listener_gets_what_was_sent_while_redis_was_away(redis_bus: RedisBus) -> None:
    """A control message published while the reader's connection was down is replayed from
    the history once it is back: a cancel during a Redis blip is not lost."""
    received: queue.Queue[dict[str, Any]] = queue.Queue()
    with redis_bus.listen("control:blip", received.put):
        assert kill_redis_clients(f"{redis_bus.prefix}control-reader")
        redis_bus.publish("control:blip", {"type": "cancel", "id": "c1"})
        assert received.get(timeout=TIMEOUT) == {"type": "cancel", "id": "c1"}
