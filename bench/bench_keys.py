"""What the API-key check costs a request: the median time of a request with keys on and off.

    python3 bench/bench_keys.py [--requests 300] [--rounds 7]

Two embedded servers run as processes of their own, one with a key (each request carries it)
and one without keys (loopback needs none); each request is a GET of a stored execution (the
store read included) and of /languages. The two are measured in rotation, a block of requests
each, round after round, so that drift in the machine's speed touches both alike. The target
(issue 11): the key check adds at most 0.3 ms to the median.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from livecode import auth  # noqa: E402
from livecode.store import Store  # noqa: E402

TARGET_MS = 0.3


@contextlib.contextmanager
def server(port: int, directory: str, with_key: bool) -> Iterator[tuple[str, dict[str, str]]]:
    """`livecode serve` on an embedded database of its own; yields its URL and the headers."""
    database = f"sqlite:///{directory}/livecode.db"
    headers: dict[str, str] = {}
    if with_key:
        store = Store.from_url(database)
        store.create_tables()
        key = auth.new_key()
        credential = auth.Credential.of(key)
        store.api_keys.create("bench", credential.prefix, credential.sha256)
        store.close()
        headers = {"Authorization": f"Bearer {key}"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECODE_")}
    env |= {
        "LIVECODE_DATABASE_URL": database,
        "LIVECODE_LOG_LEVEL": "WARNING",
        "LIVECODE_WORKER_THREADS": "1",
        "PYTHONPATH": REPO,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "livecode", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        yield url, headers
    finally:
        process.terminate()
        process.wait(30)


def block(client: httpx.Client, paths: list[str], requests: int) -> list[float]:
    """Times (ms) of `requests` GETs, the paths taken in turn."""
    times = []
    for index in range(requests):
        path = paths[index % len(paths)]
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per block")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        clients: dict[str, tuple[httpx.Client, list[str]]] = {}
        for port, name in ((18431, "keys on"), (18432, "keys off")):
            directory = stack.enter_context(tempfile.TemporaryDirectory())
            url, headers = stack.enter_context(server(port, directory, name == "keys on"))
            client = stack.enter_context(httpx.Client(base_url=url, headers=headers))
            run = client.post(
                "/executions?wait=true", json={"language": "python", "source_code": "print(1)"}
            ).json()
            clients[name] = (client, [f"/executions/{run['execution_id']}", "/languages"])
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for client, paths in clients.values():  # warm-up, not counted
            block(client, paths, args.requests // 3)
        for _ in range(args.rounds):
            for name, (client, paths) in clients.items():
                samples[name] += block(client, paths, args.requests)
    medians = {name: statistics.median(times) for name, times in samples.items()}
    for name, median in medians.items():
        print(f"{name:9} median {median:.3f} ms over {len(samples[name])} requests")
    difference = medians["keys on"] - medians["keys off"]
    verdict = "within" if difference <= TARGET_MS else "ABOVE"
    print(f"difference {difference:+.3f} ms ({verdict} the {TARGET_MS} ms target)")
    return 0 if difference <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
