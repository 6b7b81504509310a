"""Fan-out: one execution followed by many WebSockets (a class watching the teacher's program).

Prints, for embedded (one server) and distributed (two `livecode serve` processes on PostgreSQL
+ Redis, and a `livecode worker`; followers split between the servers): the lag from the first
to the last follower per output chunk (p50, p99, max), gaps, and the servers' CPU per chunk per
follower, beside the servers' CPU per chunk with one follower.

    python3 bench/bench_fanout.py [--followers 1000] [--chunks 100] [--interval-ms 50]

The followers live in this process on raw sockets (a minimal RFC 6455 client: a frame costs
its parsing and a timestamp, no JSON), so that the client's own work stays small beside the
servers'. An interactive run waits for a line of stdin; once every follower has seen it
RUNNING, the line goes and the program prints one chunk every --interval-ms. Every follower
must get the same frames, byte for byte (a digest of them); the first follower's are decoded
and joined per stream, and must equal the stored stdout and what the program printed, with
seq 1, 2, 3... All clocks are this machine's CLOCK_MONOTONIC, so lags are comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import resource
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from websockets.asyncio.client import connect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_service import (  # noqa: E402
    POSTGRES_URL,
    REPO,
    UNLIMITED,
    cpu_seconds,
    wait_ready,
)

PROGRAM = """\
import sys, time
sys.stdin.readline()
for i in range({chunks}):
    print("chunk %05d " % i + "x" * 40, flush=True)
    time.sleep({interval_s})
"""
SERVER_ENV = {**UNLIMITED, "LIVECODE_WALL_TIMEOUT_S": "120", "LIVECODE_LOG_LEVEL": "WARNING"}
OUTPUT_PREFIX = b'{"type":"output"'


@dataclass
class Follower(asyncio.Protocol):
    """One follower on a raw socket: frames' digest and the arrival time of each output."""

    execution_id: str
    keep_frames: bool = False
    transport: Any = None  # uvloop's transports are no asyncio.Transport
    buffer: bytearray = field(default_factory=bytearray)
    is_open: asyncio.Future[None] = field(init=False)
    running: asyncio.Future[None] = field(init=False)
    finished: asyncio.Future[None] = field(init=False)
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    output_times: list[float] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.is_open, self.running, self.finished = (loop.create_future() for _ in range(3))

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buffer = self.buffer
        buffer += data
        if not self.is_open.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(bytes(buffer[:end]).decode())
            del buffer[: end + 4]
            self.is_open.set_result(None)
            self.send({"type": "subscribe", "execution_id": self.execution_id})
        while len(buffer) >= 2:
            opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                (length,) = struct.unpack_from("!H", buffer, 2)
                start = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                (length,) = struct.unpack_from("!Q", buffer, 2)
                start = 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            if opcode == 1:
                self.frame(payload, now)

    def frame(self, payload: bytes, now: float) -> None:
        self.digest.update(struct.pack("!I", len(payload)) + payload)
        if self.keep_frames:
            self.frames.append(payload)
        if payload.startswith(OUTPUT_PREFIX):
            self.output_times.append(now)
        elif payload.startswith(b'{"type":"finished"'):
            self.finished.set_result(None)
        elif b'"status":"RUNNING"' in payload and not self.running.done():
            self.running.set_result(None)
        elif payload.startswith(b'{"type":"error"'):
            raise RuntimeError(payload.decode())

    def send(self, message: dict[str, object]) -> None:
        payload = json.dumps(message).encode()
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        assert len(payload) < 126 and self.transport is not None
        self.transport.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


@dataclass
class Outcome:
    lags_ms: list[float]
    chunks: int
    gaps: int
    server_cpu_s: float


async def fan_out(urls: list[str], followers: int, chunks: int, interval_ms: float) -> Outcome:
    """Run one program followed by `followers` sockets spread over `urls`; measure the lags."""
    loop = asyncio.get_running_loop()
    source = PROGRAM.format(chunks=chunks, interval_s=interval_ms / 1000)
    async with connect(urls[0].replace("http", "ws") + "/ws", max_size=None) as ws:
        await ws.send(json.dumps({"type": "create", "language": "python", "source_code": source}))
        session_id = json.loads(await ws.recv())["session"]["id"]
        await ws.send(json.dumps({"type": "run", "session_id": session_id, "interactive": True}))
        queued = json.loads(await ws.recv())
        execution_id = queued["execution_id"]
        sockets: list[Follower] = []
        for batch in range(0, followers, 100):
            opened = []
            for index in range(batch, min(followers, batch + 100)):
                host, port = urls[index % len(urls)].removeprefix("http://").split(":")
                _, protocol = await loop.create_connection(
                    lambda index=index: Follower(execution_id, keep_frames=index == 0),
                    host,
                    int(port),
                )
                sockets.append(protocol)
                opened.append(protocol)
            await asyncio.gather(*(s.is_open for s in opened))
        await asyncio.gather(*(s.running for s in sockets))
        pids = SERVER_PIDS
        profilers = [
            subprocess.Popen(
                ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--nonblocking"]
                + ["--output", f"{PROFILE_DIR}/{pid}.txt", "--rate", "200"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in (pids if PROFILE_DIR and followers > 1 else [])
        ]
        cpu_before = cpu_seconds(pids)
        await ws.send(json.dumps({"type": "stdin", "execution_id": execution_id, "data": "go\n"}))
        await asyncio.gather(*(s.finished for s in sockets))
        server_cpu_s = cpu_seconds(pids) - cpu_before
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
            profiler.wait()
        for follower in sockets:
            follower.transport.close()
    digests = {follower.digest.hexdigest() for follower in sockets}
    assert len(digests) == 1, f"followers got {len(digests)} different streams"
    counts = {len(follower.output_times) for follower in sockets}
    assert len(counts) == 1, counts
    gaps = check_exact(sockets[0].frames, chunks)
    lags_ms = [
        (max(times) - min(times)) * 1000
        for times in zip(*(follower.output_times for follower in sockets), strict=True)
    ]
    return Outcome(lags_ms, len(lags_ms), gaps, server_cpu_s)


def check_exact(frames: list[bytes], chunks: int) -> int:
    """Gaps in the first follower's output (0), after checking it against the stored stdout."""
    events = [json.loads(frame) for frame in frames]
    outputs = [event for event in events if event["type"] == "output"]
    finished = events[-1]
    assert finished["type"] == "finished" and finished["status"] == "COMPLETED", finished
    stdout = "".join(e["data"] for e in outputs if e["stream"] == "stdout")
    expected = "".join(f"chunk {i:05d} " + "x" * 40 + "\n" for i in range(chunks))
    assert stdout == finished["stdout"] == expected, "the output is not byte-exact"
    seqs = [event["seq"] for event in outputs]
    return sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1) + (seqs[0] != 1)


SERVER_PIDS: list[int] = []
# --profile: py-spy samples each server while it fans out (raw stacks, for flamegraph.pl).
PROFILE_DIR = ""


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], *, server: bool) -> Iterator[None]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECODE_")}
    full_env.update(env, PYTHONPATH=REPO)
    child = subprocess.Popen([sys.executable, "-m", "livecode", *args], env=full_env, cwd=REPO)
    if server:
        SERVER_PIDS.append(child.pid)
    try:
        yield
    finally:
        child.terminate()
        child.wait(60)
        if server:
            SERVER_PIDS.remove(child.pid)


@contextlib.contextmanager
def embedded(port: int) -> Iterator[list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **SERVER_ENV,
            "LIVECODE_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
            "LIVECODE_PORT": str(port),
        }
        with process(["serve"], env, server=True):
            url = f"http://127.0.0.1:{port}"
            wait_ready(url)
            yield [url]


@contextlib.contextmanager
def private_redis(port: int) -> Iterator[str]:
    """A redis-server of this bench's own: no other bench's worker takes its messages."""
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
            ).stdout.strip()
            != b"PONG"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the bench's redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait()


@contextlib.contextmanager
def distributed(port: int) -> Iterator[list[str]]:
    """Two servers and a worker on one PostgreSQL database and a Redis of their own."""
    database = f"livecode_fanout_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{database}"'))
    stack = contextlib.ExitStack()
    try:
        redis_url = stack.enter_context(private_redis(port + 2))
        env = {
            **SERVER_ENV,
            "LIVECODE_DATABASE_URL": POSTGRES_URL.rsplit("/", 1)[0] + "/" + database,
            "LIVECODE_REDIS_URL": redis_url,
        }
        subprocess.run(
            [sys.executable, "-m", "livecode", "init-db"],
            env={**os.environ, **env},
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        urls = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
        with (
            process(["worker"], env, server=False),
            process(["serve"], {**env, "LIVECODE_PORT": str(port)}, server=True),
            process(["serve"], {**env, "LIVECODE_PORT": str(port + 1)}, server=True),
        ):
            for url in urls:
                wait_ready(url)
            yield urls
    finally:
        stack.close()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--followers", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--interval-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=2, help="executions per configuration")
    parser.add_argument("--only", choices=("embedded", "distributed"))
    parser.add_argument("--profile", metavar="DIR", help="py-spy each server into DIR/PID.txt")
    args = parser.parse_args()
    global PROFILE_DIR
    PROFILE_DIR = args.profile or ""
    # 1,000 sockets on each side: the servers inherit this limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 2 * args.followers + 200:
        sys.exit(f"ulimit -n {hard} is too low for {args.followers} followers")
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    print(
        f"{args.followers} followers of one python run printing {args.chunks} chunks of 53 bytes, "
        f"one every {args.interval_ms:g} ms; load average before: {os.getloadavg()[0]:.2f}\n"
    )
    port = 19000 + os.getpid() % 300 * 3
    configurations = {"embedded": embedded, "distributed": distributed}
    for name, servers in configurations.items():
        if args.only and name != args.only:
            continue
        with servers(port) as urls:
            # Warm-up, and the servers' CPU per chunk with one follower (the per-chunk part).
            single = asyncio.run(fan_out(urls[:1], 1, args.chunks, args.interval_ms))
            outcomes = [
                asyncio.run(fan_out(urls, args.followers, args.chunks, args.interval_ms))
                for _ in range(args.rounds)
            ]
        lags = [lag for outcome in outcomes for lag in outcome.lags_ms]
        chunks = sum(outcome.chunks for outcome in outcomes)
        cpu_s = sum(outcome.server_cpu_s for outcome in outcomes)
        per_chunk_ms = single.server_cpu_s / single.chunks * 1000
        per_follower_us = (cpu_s / chunks * 1000 - per_chunk_ms) / args.followers * 1000
        print(
            f"{name:<12} lag first->last follower per chunk: p50 {statistics.median(lags):6.1f} ms"
            f"  p99 {percentile(lags, 0.99):6.1f} ms  max {max(lags):6.1f} ms;"
            f" gaps {sum(outcome.gaps for outcome in outcomes)}; {chunks} chunks, byte-exact\n"
            f"{'':<12} server CPU: {per_chunk_ms:.2f} ms a chunk with one follower,"
            f" {per_follower_us:.1f} us per chunk per further follower"
            f" (load average now {os.getloadavg()[0]:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
