"""What the foreign APIs cost over livecode's own: a python hello world, request to answer.

Against one embedded `livecode serve` (a process of its own, so that the client does not share
its GIL), over one keep-alive HTTP connection each, alternating request by request:

    REST     POST /executions?wait=true                       livecode's own
    Judge0   POST /judge0/submissions?wait=true               201 and the submission
    Judge0*  POST /judge0/submissions?wait=true&fields=*      every attribute
    Piston   POST /api/v2/execute                             200 and the run stage

It prints each one's median, p90 and p99, its difference to REST and ratio, the median of its
differences to the REST request just before it (paired: robust to the machine's drift), and
the server's CPU per request (utime + stime of the server process around each request,
programs not included). The target: Judge0 with wait=true within 2 ms of REST (median).

    python3 bench/bench_compat.py [--runs 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELLO = "print('Hello World')"
TARGET_MS = 2.0
UNLIMITED = {"LIVECODE_RUNS_PER_MINUTE": "100000000", "LIVECODE_RUNS_PER_SESSION": "100000000"}

Request = Callable[[httpx.Client], None]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rest(client: httpx.Client) -> None:
    answer = client.post(
        "/executions?wait=true", json={"language": "python", "source_code": HELLO}
    ).json()
    assert answer["stdout"] == "Hello World\n", answer


def judge0(client: httpx.Client) -> None:
    answer = client.post(
        "/judge0/submissions?wait=true", json={"language_id": 71, "source_code": HELLO}
    ).json()
    assert answer["stdout"] == "Hello World\n", answer


def judge0_all_fields(client: httpx.Client) -> None:
    answer = client.post(
        "/judge0/submissions?wait=true&fields=*", json={"language_id": 71, "source_code": HELLO}
    ).json()
    assert answer["status_id"] == 3, answer


def piston(client: httpx.Client) -> None:
    body = {"language": "python", "version": "*", "files": [{"content": HELLO}]}
    answer = client.post("/api/v2/execute", content=json.dumps(body)).json()
    assert answer["run"]["stdout"] == "Hello World\n", answer


APIS: dict[str, Request] = {
    "REST /executions?wait=true": rest,
    "Judge0 /submissions?wait=true": judge0,
    "Judge0 /submissions?wait=true&fields=*": judge0_all_fields,
    "Piston /api/v2/execute": piston,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="requests per API and round")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with serve() as (url, pid):
        clients = {name: httpx.Client(base_url=url, timeout=60) for name in APIS}
        for name, request in APIS.items():  # warm: connections, caches, the first fork
            for _ in range(20):
                request(clients[name])
        samples: dict[str, list[float]] = {name: [] for name in APIS}
        cpu: dict[str, list[float]] = {name: [] for name in APIS}
        for round_ in range(1, options.rounds + 1):
            this_round: dict[str, list[float]] = {name: [] for name in APIS}
            for _ in range(options.runs):
                for name, request in APIS.items():
                    cpu_before = cpu_ms(pid)
                    started = time.perf_counter()
                    request(clients[name])
                    this_round[name].append((time.perf_counter() - started) * 1000)
                    cpu[name].append(cpu_ms(pid) - cpu_before)
            print(f"round {round_}:", flush=True)
            report(this_round)
            for name in APIS:
                samples[name] += this_round[name]
        print(f"all {options.rounds} rounds ({options.runs} requests each per API):")
        difference = report(samples, cpu)["Judge0 /submissions?wait=true"]
        verdict = "met" if difference <= TARGET_MS else "MISSED"
        print(
            f"target: Judge0 wait=true within {TARGET_MS:g} ms of REST (paired median): {verdict}"
        )


def report(
    samples: dict[str, list[float]], cpu: dict[str, list[float]] | None = None
) -> dict[str, float]:
    """Print each API's figures against REST's; return each one's paired median difference."""
    baseline_samples = next(iter(samples.values()))
    baseline = statistics.median(baseline_samples)
    differences = {}
    for name, values in samples.items():
        median = statistics.median(values)
        ordered = sorted(values)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        p99 = ordered[int(0.99 * (len(ordered) - 1))]
        paired = statistics.median(v - b for v, b in zip(values, baseline_samples, strict=True))
        differences[name] = paired
        line = (
            f"  {name:<40} median {median:6.2f} ms  p90 {p90:6.2f}  p99 {p99:6.2f}"
            f"  {median - baseline:+5.2f} ms ({median / baseline:4.2f}x REST)"
            f", paired {paired:+5.2f}"
        )
        if cpu is not None:
            line += f"; server CPU {statistics.fmean(cpu[name]):5.2f} ms/request"
        print(line, flush=True)
    return differences


def cpu_ms(pid: int) -> float:
    """CPU time the process has used, user and system, in ms."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / CLOCK_TICKS


@contextlib.contextmanager
def serve() -> Iterator[tuple[str, int]]:
    """An embedded `livecode serve` on a free port, with a database of its own."""
    with tempfile.TemporaryDirectory() as directory, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECODE_")}
        env.update(
            UNLIMITED,
            PYTHONPATH=REPO,
            LIVECODE_LOG_LEVEL="WARNING",
            LIVECODE_DATABASE_URL=f"sqlite:///{directory}/bench.db",
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "livecode", "serve", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                        break
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("livecode serve did not start")
                time.sleep(0.05)
            yield url, server.pid
        finally:
            server.terminate()
            server.wait(60)


if __name__ == "__main__":
    main()
