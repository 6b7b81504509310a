"""`livecode run hello.py` against `python3 hello.py`: what the client adds to a run from a shell.

Starts an embedded `livecode serve` (a temporary SQLite file, a free port), then times, in
alternation so that both see the same machine, N wall times each of:

    python3 hello.py               the interpreter the sandbox runs programs with (--python)
    venv python -c pass            this venv's interpreter starting: its site (an editable
                                   install's import finder is part of it) before any livecode
    livecode --version             the client's start alone: interpreter, imports, argparse
    livecode run hello.py          start, socket, create + run, the sandboxed run, output, exit

and prints the medians, the difference and the ratio; and, as this machine's load moves wall
times by tens of milliseconds, the CPU time of each command (user + system), which moves less.
Usage:

    python3 bench/bench_cli.py [--runs 30] [--python /usr/bin/python3] [--server URL]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HELLO = 'print("hello")\n'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each command (default 30)")
    parser.add_argument(
        "--python",
        default=shutil.which("python3", path="/usr/bin") or sys.executable,
        help="the python3 to compare with (default /usr/bin/python3, as the sandbox runs)",
    )
    parser.add_argument("--server", help="use this running server instead of starting one")
    options = parser.parse_args()
    livecode = Path(sys.executable).with_name("livecode")
    if not livecode.exists():
        print(f"{livecode} is missing: pip install -e . in this venv first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as directory:
        hello = Path(directory, "hello.py")
        hello.write_text(HELLO)
        with _server(options.server, Path(directory)) as url:
            env = {**os.environ, "LIVECODE_SERVER": url}
            # As installed: bytecode cached (pip compiles it; a checkout writes it once).
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            commands = {
                "python3 hello.py": [options.python, str(hello)],
                "venv python -c pass": [sys.executable, "-c", "pass"],
                "livecode --version": [str(livecode), "--version"],
                "livecode run hello.py": [str(livecode), "run", str(hello)],
            }
            for command in commands.values():  # warm the page cache and the server
                _time(command, env)
            walls: dict[str, list[float]] = {name: [] for name in commands}
            cpus: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(options.runs):
                for name, command in commands.items():
                    wall_s, cpu_s = _time(command, env)
                    walls[name].append(wall_s * 1000)
                    cpus[name].append(cpu_s * 1000)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{options.runs} runs each, in alternation; python3 is {options.python}; {url}")
    print(f"load average {load} on {os.cpu_count()} cores (others' work slows wall times)")
    print(f"  {'':24s} {'wall median':>11s}  {'p10':>6s}  {'p90':>6s}   {'CPU median':>10s}")
    for name in commands:
        low, *_, high = statistics.quantiles(walls[name], n=10)
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"  {name:24s} {wall:8.1f} ms  {low:6.1f}  {high:6.1f}   {cpu:7.1f} ms")
    base, run = (
        statistics.median(walls[name]) for name in ("python3 hello.py", "livecode run hello.py")
    )
    print(f"  livecode run - python3:  {run - base:+.1f} ms wall, ratio {run / base:.2f}")
    return 0


def _time(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of `command`, in seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or (b"hello" not in done.stdout and "run" in command):
        raise SystemExit(f"{command} failed ({done.returncode}): {done.stderr.decode()}")
    cpu_s = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall_s, cpu_s


@contextlib.contextmanager
def _server(url: str | None, directory: Path) -> Iterator[str]:
    """The given server, or an embedded `livecode serve` of our own for the benchmark's time."""
    if url is not None:
        yield url
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECODE_")}
    env |= {
        "LIVECODE_DATABASE_URL": f"sqlite:///{directory / 'livecode.db'}",
        "LIVECODE_PORT": str(port),
        "LIVECODE_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "livecode", "serve"], env=env, cwd=REPO, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health/ready", timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the benchmark's server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
