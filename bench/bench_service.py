"""End-to-end benchmark of the service, beside the bare interpreter and runners alone.

Prints, for a python hello world: bare `/usr/bin/python3 -c`, the `runners` sandboxed run, and
run -> finished over a real WebSocket (embedded, and distributed with PostgreSQL + Redis + a
separate worker process), with medians, p99 and the difference to bare; runs/s at
concurrency 1, 4, 16 against bare and runners-only; autosaves/s over one WS and over REST.
Python runs are forked from the warm interpreter (runners/warm.py) unless "cold" is in the
configuration's name (LIVECODE_WARM_PYTHON=false); issue 14's targets are checked last.

    python3 bench/bench_service.py [--runs 200] [--seconds 3] [--rounds 3] [--levels 1,4,16]

Servers run as separate processes so the client does not share their GIL. All of them run for
the whole benchmark, idle when not measured, and the configurations are measured in rotation
(a block of runs or a throughput slice each, round after round), so that drift in the
machine's speed touches them all alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import sqlalchemy as sa
from websockets.asyncio.client import connect

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from runners import Limits, Program, Sandbox, SandboxConfig, WarmConfig  # noqa: E402

HELLO = "print('Hello World')"
PYTHON = "/usr/bin/python3"
POSTGRES_URL = os.environ.get(
    "LIVECODE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("LIVECODE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
UNLIMITED = {
    "LIVECODE_RUNS_PER_MINUTE": "100000000",
    "LIVECODE_RUNS_PER_SESSION": "100000000",
    "LIVECODE_WS_MESSAGES_PER_S": "100000",
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(name: str, samples_ms: list[float], bare_ms: float | None = None) -> float:
    median = statistics.median(samples_ms)
    p90, p99 = percentile(samples_ms, 0.9), percentile(samples_ms, 0.99)
    line = f"{name:<44} median {median:7.2f} ms   p90 {p90:7.2f}   p99 {p99:7.2f}"
    if bare_ms is not None:
        line += f"   +{median - bare_ms:6.2f} ms over bare ({median / bare_ms:4.2f}x)"
    print(line, flush=True)
    return median


def bare_run() -> None:
    subprocess.run(
        [PYTHON, "-c", HELLO], env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE, check=True
    )


def timed(function: Callable[[], None], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def runs_per_second(function: Callable[[], None], concurrency: int, seconds: float) -> float:
    done = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            function()
            with lock:
                done += 1

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done / (time.monotonic() - started)


# livecode's processes by role, for the CPU split: filled as they start
SERVICE_PIDS: dict[str, list[int]] = {}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], role: str) -> Iterator[None]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECODE_")}
    full_env.update(env, PYTHONPATH=REPO, LIVECODE_LOG_LEVEL="WARNING")
    child = subprocess.Popen([sys.executable, "-m", "livecode", *args], env=full_env, cwd=REPO)
    SERVICE_PIDS.setdefault(role, []).append(child.pid)
    try:
        yield
    finally:
        child.terminate()
        child.wait(60)


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health/workers", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


async def ws_latencies(url: str, runs: int) -> list[float]:
    async with connect(url.replace("http", "ws") + "/ws", max_size=None) as ws:
        await ws.send(json.dumps({"type": "create", "language": "python", "source_code": HELLO}))
        session_id = json.loads(await ws.recv())["session"]["id"]
        samples = []
        for _ in range(runs + 5):
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "run", "session_id": session_id}))
            while True:
                event = json.loads(await ws.recv())
                if event["type"] == "finished":
                    assert event["stdout"] == "Hello World\n", event
                    break
                if event["type"] == "error":
                    raise RuntimeError(event)
            samples.append((time.perf_counter() - started) * 1000)
        return samples[5:]


async def ws_throughput(url: str, concurrency: int, seconds: float) -> float:
    deadline = time.monotonic() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        async with connect(url.replace("http", "ws") + "/ws", max_size=None) as ws:
            await ws.send(
                json.dumps({"type": "create", "language": "python", "source_code": HELLO})
            )
            session_id = json.loads(await ws.recv())["session"]["id"]
            while time.monotonic() < deadline:
                await ws.send(json.dumps({"type": "run", "session_id": session_id}))
                while True:
                    event = json.loads(await ws.recv())
                    if event["type"] == "finished":
                        break
                    if event["type"] == "error":
                        raise RuntimeError(event)
                done += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done / (time.monotonic() - started)


async def autosaves(url: str, seconds: float) -> tuple[float, float]:
    async with connect(url.replace("http", "ws") + "/ws") as ws:
        await ws.send(json.dumps({"type": "create", "language": "python", "source_code": ""}))
        session_id = json.loads(await ws.recv())["session"]["id"]
        count, deadline = 0, time.monotonic() + seconds
        started = time.monotonic()
        while time.monotonic() < deadline:
            await ws.send(
                json.dumps(
                    {"type": "autosave", "session_id": session_id, "source_code": f"x = {count}"}
                )
            )
            assert json.loads(await ws.recv())["type"] == "saved"
            count += 1
        ws_rate = count / (time.monotonic() - started)
    with httpx.Client(base_url=url) as client:
        count, deadline = 0, time.monotonic() + seconds
        started = time.monotonic()
        while time.monotonic() < deadline:
            assert (
                client.patch(
                    f"/code-sessions/{session_id}", json={"source_code": f"y = {count}"}
                ).status_code
                == 200
            )
            count += 1
        rest_rate = count / (time.monotonic() - started)
    return ws_rate, rest_rate


@contextlib.contextmanager
def embedded_server(port: int, *, is_warm: bool = True) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "LIVECODE_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
            "LIVECODE_PORT": str(port),
            "LIVECODE_WARM_PYTHON": str(is_warm).lower(),
            **UNLIMITED,
        }
        role = "embedded server" if is_warm else "embedded cold server"
        with process(["serve"], env, role):
            url = f"http://127.0.0.1:{port}"
            wait_ready(url)
            yield url


@contextlib.contextmanager
def distributed_servers(port: int) -> Iterator[str]:
    database = f"livecode_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{database}"'))
    try:
        env = {
            "LIVECODE_DATABASE_URL": POSTGRES_URL.rsplit("/", 1)[0] + "/" + database,
            "LIVECODE_REDIS_URL": REDIS_URL,
            "LIVECODE_PORT": str(port),
            **UNLIMITED,
        }
        subprocess.run(
            [sys.executable, "-m", "livecode", "init-db"],
            env={**os.environ, **env},
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with process(["worker"], env, "worker"), process(["serve"], env, "web"):
            url = f"http://127.0.0.1:{port}"
            wait_ready(url)
            yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes (threads included), from /proc."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def pids_named(*prefixes: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as comm:
            if comm.read().startswith(prefixes):
                found.append(int(pid))
    return found


def machine_cpu_seconds() -> float:
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS  # all but idle and iowait


def cpu_split(url: str, roles: dict[str, list[int]], concurrency: int, seconds: float) -> str:
    """CPU per run, by process role, over a throughput slice; the rest is mostly sandboxes."""
    parts_before = {role: cpu_seconds(pids) for role, pids in roles.items()}
    client_before, machine_before = time.process_time(), machine_cpu_seconds()
    rate = asyncio.run(ws_throughput(url, concurrency, seconds))
    runs = rate * seconds
    per_run = {
        role: (cpu_seconds(pids) - parts_before[role]) * 1000 / runs for role, pids in roles.items()
    }
    per_run["client"] = (time.process_time() - client_before) * 1000 / runs
    total = (machine_cpu_seconds() - machine_before) * 1000 / runs
    split = "  ".join(f"{role} {ms:.2f}" for role, ms in per_run.items())
    return f"{total:5.2f} ms = {split}  sandboxes and the rest {total - sum(per_run.values()):.2f}"


def interleaved(
    configs: dict[str, Callable[[], float | list[float]]], rounds: int
) -> dict[str, list[float]]:
    """Measure every configuration once per round, in a rotating order.

    The machine's speed drifts (other tenants); interleaving exposes every configuration to
    the same drift, so their ratios hold even when the absolute figures move.
    """
    names = list(configs)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            figure = configs[name]()
            results[name].extend(figure if isinstance(figure, list) else [figure])
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200, help="latency samples per configuration")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of a throughput slice")
    parser.add_argument("--rounds", type=int, default=3, help="throughput slices per configuration")
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels of throughput")
    args = parser.parse_args()
    levels = tuple(int(level) for level in args.levels.split(","))
    print(
        f"python hello world; latency: {args.runs} runs each; throughput: {args.rounds} slices "
        f"of {args.seconds:g} s each; configurations interleaved round by round\n"
    )
    port = 18000 + os.getpid() % 1000
    with (
        Sandbox(SandboxConfig(slots=4)) as sandbox,
        Sandbox(SandboxConfig(slots=4, warm=WarmConfig(enabled=False))) as cold_sandbox,
        embedded_server(port) as embedded_url,
        embedded_server(port + 2, is_warm=False) as embedded_cold_url,
        distributed_servers(port + 1) as distributed_url,
    ):
        print(f"warm start of Python: {sandbox.measures()['warm_python']}\n")
        program, limits = Program("python", HELLO), Limits()
        sandboxed = lambda: sandbox.run(program, limits)  # noqa: E731
        sandboxed_cold = lambda: cold_sandbox.run(program, limits)  # noqa: E731
        timed(sandboxed, 10)
        timed(sandboxed_cold, 10)
        urls = {
            "embedded": embedded_url,
            "embedded cold": embedded_cold_url,
            "distributed": distributed_url,
        }
        block = 20
        latency = interleaved(
            {
                "bare": lambda: timed(bare_run, block),
                "runners": lambda: timed(sandboxed, block),
                "runners cold": lambda: timed(sandboxed_cold, block),
                **{
                    name: (lambda url=url: asyncio.run(ws_latencies(url, block)))
                    for name, url in urls.items()
                },
            },
            max(1, args.runs // block),
        )
        bare_ms = report("bare /usr/bin/python3 -c", latency["bare"])
        report("runners, full sandbox", latency["runners"], bare_ms)
        report("runners, full sandbox, cold", latency["runners cold"], bare_ms)
        medians = {
            name: report(f"{name}: WS run -> finished", latency[name], bare_ms) for name in urls
        }
        rates: dict[int, dict[str, float]] = {}
        for concurrency in levels:
            slices = interleaved(
                {
                    "bare": lambda c=concurrency: runs_per_second(bare_run, c, args.seconds),
                    "runners": lambda c=concurrency: runs_per_second(sandboxed, c, args.seconds),
                    "runners cold": lambda c=concurrency: runs_per_second(
                        sandboxed_cold, c, args.seconds
                    ),
                    **{
                        name: (
                            lambda url=url, c=concurrency: asyncio.run(
                                ws_throughput(url, c, args.seconds)
                            )
                        )
                        for name, url in urls.items()
                    },
                },
                args.rounds,
            )
            rates[concurrency] = {name: statistics.mean(values) for name, values in slices.items()}
        for name, url in urls.items():
            ws_rate, rest_rate = asyncio.run(autosaves(url, args.seconds))
            print(f"{name}: autosaves/s  one WS {ws_rate:7.0f}   REST {rest_rate:7.0f}")
        roles = {
            "embedded": {"server": SERVICE_PIDS["embedded server"]},
            "embedded cold": {"server": SERVICE_PIDS["embedded cold server"]},
            "distributed": {
                "web": SERVICE_PIDS["web"],
                "worker": SERVICE_PIDS["worker"],
                "postgres": pids_named("postgres"),
                "redis": pids_named("redis"),
            },
        }
        print("\nCPU per run at c=4 (both cores busy), by process:")
        for name, url in urls.items():
            print(f"  {name:<12} {cpu_split(url, roles[name], 4, 2 * args.seconds)}")

    print("\nruns/s (python hello world)   " + "".join(f"{f'c={c}':>9}" for c in levels))
    for name, label in (
        ("bare", "bare"),
        ("runners", "runners only (sandboxed)"),
        ("runners cold", "runners only, cold"),
    ):
        print(f"  {label:<27}" + "".join(f"{rates[c][name]:9.1f}" for c in levels))
    for name in urls:
        figures = "".join(f"{rates[c][name]:9.1f}" for c in levels)
        ratios = "  ".join(f"{rates[c][name] / rates[c]['bare']:5.0%}" for c in levels)
        print(f"  service, {name:<17}{figures}   of bare: {ratios}")
    print(
        f"\nmedian over bare: embedded {medians['embedded'] - bare_ms:+.2f} ms (target <= 10), "
        f"distributed {medians['distributed'] - bare_ms:+.2f} ms (target <= 20)"
    )
    # issue 14: warm Python through the whole service beside the bare interpreter
    print(
        f"issue 14: embedded p50 {medians['embedded']:.2f} ms vs bare {bare_ms:.2f} ms "
        f"(target: at or under bare)"
    )
    if 4 in rates:
        ratio = rates[4]["embedded"] / rates[4]["bare"]
        distributed = rates[4]["distributed"] / rates[4]["bare"]
        print(
            f"issue 14: runs/s at c=4 embedded {ratio:.2f}x bare (target >= 1.5x), "
            f"distributed {distributed:.2f}x (target >= 1.0x)"
        )


if __name__ == "__main__":
    main()
