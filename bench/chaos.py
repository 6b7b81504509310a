"""Chaos: executions with followers while workers are SIGKILLed and Redis restarts empty.

Starts its own redis-server (a free port, nothing on disk) and its own PostgreSQL database
(on LIVECODE_BENCH_DATABASE_URL's server), a server and worker processes from this checkout,
then runs `--executions` programs, each followed over a WebSocket, `--concurrency` at a time,
while a worker is SIGKILLed (and a new one started) every `--kill-every` seconds and Redis is
killed and started again, empty, `--redis-restarts` times. Prints:

    lost        accepted runs that are gone from the store
    stuck       runs not final once the chaos is over and the recovery time has passed
    gaps        followers whose kept output (after the last attempt's RUNNING status) skips a
                seq, or differs from the stored output
    duplicates  followers that got an output seq twice
    recovery    from an attempt's last event (its program prints every `--pause` seconds, so
                this is within that of its worker's SIGKILL) to the `status` QUEUED of its
                retry, and from Redis's return to the end of the first run accepted after it

    python3 bench/chaos.py [--executions 500] [--concurrency 12] [--kill-every 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_service import POSTGRES_URL, REPO, UNLIMITED  # noqa: E402

# Prints its token on each of a few lines, with pauses: long enough for kills to land mid-run.
PROGRAM = (
    "import time\nfor i in range({lines}):\n"
    "    print({token!r}, i, flush=True)\n    time.sleep({pause})\n"
)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Redis:
    """The bench's own redis-server on a fixed port; `restart` loses its data."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.3)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@dataclass
class Run:
    token: str
    execution_id: str | None = None
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    accepted_at: float = 0.0


class Cluster:
    """The server and workers of this checkout on the bench's database and Redis."""

    def __init__(self, env: dict[str, str], workers: int) -> None:
        self.env = env
        self.workers: list[subprocess.Popen[bytes]] = []
        self.server: subprocess.Popen[bytes] | None = None
        self.want_workers = workers
        self.lock = threading.Lock()

    def start(self) -> None:
        self.server = self._spawn("serve")
        for _ in range(self.want_workers):
            self.workers.append(self._spawn("worker"))

    def _spawn(self, role: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "livecode", role],
            env=self.env,
            cwd=REPO,
            stderr=subprocess.DEVNULL,
        )

    def kill_a_worker(self) -> None:
        with self.lock:
            victim = random.choice(self.workers)
            victim.kill()
            victim.wait()
            self.workers.remove(victim)
            self.workers.append(self._spawn("worker"))

    def stop(self) -> None:
        for process in [*self.workers, *([self.server] if self.server else [])]:
            process.terminate()
        for process in [*self.workers, *([self.server] if self.server else [])]:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def own_database() -> Iterator[str]:
    name = f"livecode_chaos_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def follow(url: str, runs: asyncio.Queue[Run], lines: int, pause: float) -> None:
    """Take runs off the queue one by one: run each over a WebSocket and follow it to its end,
    reconnecting with `since` whenever the socket or its follow breaks."""
    ws_url = url.replace("http", "ws") + "/ws"
    while True:
        try:
            run = runs.get_nowait()
        except asyncio.QueueEmpty:
            return
        source = PROGRAM.format(lines=lines, token=run.token, pause=pause)
        while run.execution_id is None:  # 503s while Redis is away: try again
            try:
                async with connect(ws_url, max_size=None, open_timeout=10) as ws:
                    await ws.send(
                        json.dumps({"type": "create", "language": "python", "source_code": source})
                    )
                    created = json.loads(await ws.recv())
                    if created["type"] != "created":
                        raise RuntimeError(created.get("message"))
                    await ws.send(
                        json.dumps({"type": "run", "session_id": created["session"]["id"]})
                    )
                    while True:
                        event = json.loads(await ws.recv())
                        if event["type"] == "queued":
                            run.execution_id = event["execution_id"]
                            run.accepted_at = time.monotonic()
                            break
                        if event["type"] == "error":
                            raise RuntimeError(event["message"])
                    await _until_finished(ws, run)
            except (OSError, ConnectionClosed, RuntimeError, TimeoutError) as exc:
                run.errors.append(f"submit: {exc}")
                await asyncio.sleep(0.5)
        while not _is_finished(run):
            try:
                async with connect(ws_url, max_size=None, open_timeout=10) as ws:
                    since = max(
                        (e["seq"] for _, e in run.events if e["type"] == "output"), default=0
                    )
                    await ws.send(
                        json.dumps(
                            {"type": "subscribe", "execution_id": run.execution_id, "since": since}
                        )
                    )
                    await _until_finished(ws, run)
            except (OSError, ConnectionClosed, TimeoutError) as exc:
                run.errors.append(f"follow: {exc}")
                await asyncio.sleep(0.5)


async def _until_finished(ws: Any, run: Run) -> None:
    while not _is_finished(run):
        event = json.loads(await asyncio.wait_for(ws.recv(), 120))
        if event.get("execution_id") != run.execution_id:
            continue
        if event["type"] == "error":
            run.errors.append(f"event: {event['message']}")
            return  # the follow broke: subscribe again with since
        run.events.append((time.monotonic(), event))


def _is_finished(run: Run) -> bool:
    return any(e["type"] == "finished" for _, e in run.events)


def kept(run: Run) -> tuple[list[dict[str, Any]], int]:
    """The outputs after the last attempt's first RUNNING status, and that status's seq."""
    events = [e for _, e in run.events]
    running = [
        (e["attempt"], -i)
        for i, e in enumerate(events)
        if e["type"] == "status" and e["status"] == "RUNNING"
    ]
    if not running:
        return [e for e in events if e["type"] == "output"], 0
    start = -max(running)[1]
    return [e for e in events[start + 1 :] if e["type"] == "output"], events[start].get("seq", 0)


def chaos(
    cluster: Cluster,
    redis: Redis,
    stop: threading.Event,
    kill_every_s: float,
    redis_restarts: int,
    log: dict[str, list[float]],
) -> None:
    started = time.monotonic()
    restart_at = [started + 12 + n * 25 for n in range(redis_restarts)]
    while not stop.wait(kill_every_s):
        cluster.kill_a_worker()
        log["kills"].append(time.monotonic())
        if restart_at and time.monotonic() >= restart_at[0]:
            restart_at.pop(0)
            redis.kill()
            time.sleep(1.0)
            redis.start()
            log["redis_back"].append(time.monotonic())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executions", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=4.0)
    parser.add_argument("--redis-restarts", type=int, default=2)
    parser.add_argument("--lines", type=int, default=4)
    parser.add_argument("--pause", type=float, default=0.1)
    args = parser.parse_args()
    redis = Redis()
    redis.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with own_database() as database:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECODE_")}
        env.update(
            UNLIMITED,
            PYTHONPATH=REPO,
            LIVECODE_DATABASE_URL=database,
            LIVECODE_REDIS_URL=redis.url,
            LIVECODE_PORT=str(port),
            LIVECODE_LOG_LEVEL="WARNING",
            LIVECODE_QUEUE_CAP="100000",
        )
        subprocess.run(
            [sys.executable, "-m", "livecode", "init-db"],
            env=env,
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        cluster = Cluster(env, args.workers)
        cluster.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/health/workers", timeout=1).status_code == 200:
                        break
                time.sleep(0.2)
            report(run_chaos(args, cluster, redis, url), url, args)
        finally:
            cluster.stop()
            redis.kill()


def run_chaos(args: argparse.Namespace, cluster: Cluster, redis: Redis, url: str) -> dict[str, Any]:
    runs = [Run(token=f"r{n:04d}") for n in range(args.executions)]
    queue: asyncio.Queue[Run] = asyncio.Queue()
    for run in runs:
        queue.put_nowait(run)
    log: dict[str, list[float]] = {"kills": [], "redis_back": []}
    stop = threading.Event()
    agent = threading.Thread(
        target=chaos, args=(cluster, redis, stop, args.kill_every, args.redis_restarts, log)
    )
    started = time.monotonic()
    agent.start()

    async def everyone() -> None:
        await asyncio.gather(
            *(follow(url, queue, args.lines, args.pause) for _ in range(args.concurrency))
        )

    try:
        asyncio.run(everyone())
    finally:
        stop.set()
        agent.join()
    return {"runs": runs, "log": log, "seconds": time.monotonic() - started}


def report(outcome: dict[str, Any], url: str, args: argparse.Namespace) -> None:
    runs: list[Run] = outcome["runs"]
    log = outcome["log"]
    lost = stuck = gaps = duplicates = failed = retried = 0
    moved_on: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for run in runs:
            answer = client.get(f"/executions/{run.execution_id}")
            if answer.status_code == 404:
                lost += 1
                continue
            stored = answer.json()
            if stored["status"] in ("QUEUED", "RUNNING"):
                stuck += 1
                continue
            if stored["status"] != "COMPLETED":
                failed += 1
            if stored.get("attempt", 1) > 1:
                retried += 1
            outputs, base = kept(run)
            seqs = [e["seq"] for e in outputs]
            if len(seqs) != len(set(seqs)):
                duplicates += 1
            elif (
                seqs != list(range(base + 1, base + 1 + len(seqs)))
                or "".join(e["data"] for e in outputs if e["stream"] == "stdout")
                != stored["stdout"]
            ):
                gaps += 1
            previous_at = None
            for at, event in run.events:
                if event["type"] == "status" and event["status"] == "QUEUED" and event["attempt"]:
                    if previous_at is not None:  # the attempt's last sign of life
                        moved_on.append(at - previous_at)
                previous_at = at
    after_redis = []  # from Redis's return to the first run accepted after it that finished
    for back in log["redis_back"]:
        later = [
            at
            for run in runs
            if run.accepted_at > back
            for at, e in run.events
            if e["type"] == "finished"
        ]
        if later:
            after_redis.append(min(later) - back)
    print(
        f"{len(runs)} executions in {outcome['seconds']:.0f} s, {len(log['kills'])} workers "
        f"SIGKILLed, Redis restarted {len(log['redis_back'])} times; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(f"lost {lost}   stuck {stuck}   gaps {gaps}   duplicates {duplicates}")
    print(f"retried {retried}   ended not COMPLETED {failed}")
    if moved_on:
        print(
            f"a dead worker's execution moved on after: median {statistics.median(moved_on):.1f} s,"
            f" max {max(moved_on):.1f} s ({len(moved_on)} retries)"
        )
    if after_redis:
        print(
            "first run accepted after Redis came back ended after: "
            + ", ".join(f"{s:.1f} s" for s in after_redis)
        )
    errors = sum(len(run.errors) for run in runs)
    print(f"follows broken and resumed with since: {errors}")


if __name__ == "__main__":
    main()
