"""Test cases against separate runs: 20 cases of one C++ program beside 20 runs of it.

One run with `cases` compiles once and runs each case in a fresh sandbox, on its slot and side
by side on the slots its worker spares (runners/pool.py), in one execution: one queue
hand-off, one claim, one final write, one `finished`. Twenty separate runs of the
same source pay all of that twenty times; the binary cache spares them the compiler after the
first. Measured over a real WebSocket against an embedded server (a separate process), and with
`runners` alone (no service), each in rotation, round after round:

    cold   a source never compiled before (a fresh comment each round): both compile once
    warm   the same source again: both skip the compiler (the cases run too)

and the separate runs both one after another (a client waiting for each) and all at once (sent
together, run by the server's worker threads side by side).

    python3 bench/bench_cases.py [--rounds 5] [--cases 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import httpx
from websockets.asyncio.client import ClientConnection, connect

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from livecode.config import default_worker_threads  # noqa: E402
from runners import Case, ExecutionStatus, Limits, Program, Sandbox, SandboxConfig  # noqa: E402

SOURCE = """#include <iostream>
int main() { long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }
"""
UNLIMITED = {
    "LIVECODE_RUNS_PER_MINUTE": "100000000",
    "LIVECODE_RUNS_PER_SESSION": "100000000",
    "LIVECODE_WS_MESSAGES_PER_S": "100000",
    "LIVECODE_MAX_CASES": "1000",
}


def inputs(count: int) -> list[tuple[str, str]]:
    """(stdin, expected output) of each case."""
    return [(f"{n} {n * 7}", str(n * 8)) for n in range(count)]


# -- over the WebSocket --------------------------------------------------------------------


async def until_finished(ws: ClientConnection, execution_id: str) -> dict[str, object]:
    while True:
        event = json.loads(await ws.recv())
        if event["type"] == "error":
            raise RuntimeError(event)
        if event["type"] == "finished" and event["execution_id"] == execution_id:
            return event  # type: ignore[no-any-return]


async def queue_run(ws: ClientConnection, session_id: str, **options: object) -> str:
    await ws.send(json.dumps({"type": "run", "session_id": session_id, "ref": "q", **options}))
    while True:
        event = json.loads(await ws.recv())
        if event.get("ref") == "q":
            if event["type"] != "queued":
                raise RuntimeError(event)
            return str(event["execution_id"])


async def with_session(
    url: str, source: str, work: Callable[[ClientConnection, str], Awaitable[None]]
) -> float:
    """Seconds that `work` takes on a fresh session of `source` (its creation not counted)."""
    async with connect(url.replace("http", "ws") + "/ws", max_size=None) as ws:
        create = {"type": "create", "language": "c++", "source_code": source}
        await ws.send(json.dumps(create))
        session_id = json.loads(await ws.recv())["session"]["id"]
        started = time.perf_counter()
        await work(ws, session_id)
        return time.perf_counter() - started


def ws_cases(count: int) -> Callable[[ClientConnection, str], Awaitable[None]]:
    async def work(ws: ClientConnection, session_id: str) -> None:
        cases = [{"stdin": stdin, "expected_output": out} for stdin, out in inputs(count)]
        finished = await until_finished(ws, await queue_run(ws, session_id, cases=cases))
        verdicts = [case["verdict"] for case in finished["cases"]]  # type: ignore[attr-defined]
        assert verdicts == ["accepted"] * count, finished

    return work


def ws_separate(count: int, *, at_once: bool) -> Callable[[ClientConnection, str], Awaitable[None]]:
    async def work(ws: ClientConnection, session_id: str) -> None:
        if not at_once:
            for stdin, out in inputs(count):
                finished = await until_finished(ws, await queue_run(ws, session_id, stdin=stdin))
                assert finished["stdout"] == out + "\n", finished
            return
        expected = {}
        for index, (stdin, out) in enumerate(inputs(count)):
            run = {"type": "run", "session_id": session_id, "ref": str(index), "stdin": stdin}
            await ws.send(json.dumps(run))
            expected[str(index)] = out + "\n"
        # a run may finish before the last one is queued: every event is read in order
        outputs: dict[str, str] = {}
        stdout_of: dict[str, str] = {}
        while len(stdout_of) < count:
            event = json.loads(await ws.recv())
            if event["type"] == "queued":
                outputs[event["execution_id"]] = expected[event["ref"]]
            elif event["type"] == "finished":
                stdout_of[event["execution_id"]] = event["stdout"]
            elif event["type"] == "error":
                raise RuntimeError(event)
        assert stdout_of == outputs, (stdout_of, outputs)

    return work


@contextlib.contextmanager
def embedded_server(port: int) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECODE_")}
        env.update(
            UNLIMITED,
            LIVECODE_DATABASE_URL=f"sqlite:///{tmp}/bench.db",
            LIVECODE_PORT=str(port),
            LIVECODE_LOG_LEVEL="WARNING",
            PYTHONPATH=REPO,
        )
        child = subprocess.Popen([sys.executable, "-m", "livecode", "serve"], env=env, cwd=REPO)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/health/workers", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not become ready")
                time.sleep(0.1)
            yield url
        finally:
            child.terminate()
            child.wait(60)


# -- runners alone -------------------------------------------------------------------------


def runners_cases(sandbox: Sandbox, source: str, count: int) -> float:
    cases = tuple(Case(stdin.encode(), (), out) for stdin, out in inputs(count))
    started = time.perf_counter()
    result = sandbox.run(Program("c++", source, cases=cases), Limits())
    elapsed = time.perf_counter() - started
    assert [case.verdict for case in result.cases] == ["accepted"] * count, result
    return elapsed


def runners_separate(sandbox: Sandbox, source: str, count: int) -> float:
    started = time.perf_counter()
    for stdin, out in inputs(count):
        result = sandbox.run(Program("c++", source, stdin=stdin.encode()), Limits())
        assert result.status is ExecutionStatus.COMPLETED and result.stdout == out + "\n"
    return time.perf_counter() - started


# -- the report ----------------------------------------------------------------------------


def line(name: str, cases_s: list[float], separate_s: list[float]) -> None:
    cases_ms = statistics.median(cases_s) * 1000
    separate_ms = statistics.median(separate_s) * 1000
    print(
        f"  {name:<34} cases {cases_ms:8.1f} ms   separate {separate_ms:8.1f} ms"
        f"   separate/cases {separate_ms / cases_ms:5.2f}x",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--port", type=int, default=8797)
    options = parser.parse_args()
    count = options.cases
    results: dict[str, list[float]] = {}

    def keep(name: str, seconds: float) -> None:
        results.setdefault(name, []).append(seconds)

    work_root = tempfile.mkdtemp(dir="/var/tmp", prefix="livecode-bench-cases-")
    try:
        with (
            embedded_server(options.port) as url,
            # as many slots as the server's worker threads: cases may borrow the spare ones
            Sandbox(SandboxConfig(slots=default_worker_threads(), work_root=work_root)) as sandbox,
        ):
            # the precompiled header is built in the background: not part of what is measured
            sandbox.run(Program("c++", SOURCE), Limits())
            for round_number in range(options.rounds):
                print(f"round {round_number + 1}/{options.rounds}", flush=True)
                order = ["ws", "ws_seq", "ws_par", "runners", "runners_seq"]
                if round_number % 2:
                    order.reverse()  # neither side always first after the other
                sources = {name: f"// {uuid.uuid4()}\n{SOURCE}" for name in order}
                for warm in (False, True):
                    for name in order:
                        source = sources[name]  # cold: never compiled; warm: compiled just now
                        key = f"{name} {'warm' if warm else 'cold'}"
                        if name == "ws":
                            seconds = asyncio.run(with_session(url, source, ws_cases(count)))
                        elif name in ("ws_seq", "ws_par"):
                            work = ws_separate(count, at_once=name == "ws_par")
                            seconds = asyncio.run(with_session(url, source, work))
                        elif name == "runners":
                            seconds = runners_cases(sandbox, source, count)
                        else:
                            seconds = runners_separate(sandbox, source, count)
                        keep(key, seconds)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    print(f"\n{count} cases of one C++ program against {count} runs of it (medians of "
          f"{options.rounds} rounds; load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    for warm in ("cold", "warm"):
        print(f"{warm} ({'compiled once either way' if warm == 'cold' else 'no compile'}):")
        line("WebSocket, one after another", results[f"ws {warm}"], results[f"ws_seq {warm}"])
        line("WebSocket, all sent at once", results[f"ws {warm}"], results[f"ws_par {warm}"])
        line("runners alone, one after another", results[f"runners {warm}"],
             results[f"runners_seq {warm}"])  # fmt: skip


if __name__ == "__main__":
    main()
