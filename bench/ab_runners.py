"""A/B of two checkouts' sandbox starts, side by side with the bare programs.

Starts a 1-slot Sandbox from each tree (a process each, on a work root of its own) and times
single runs of python, node and two C++ binaries (a hello and a 4 MB one, cache hits) in
alternating blocks, the bare program's in the same rotation: this machine's speed drifts by
20-30 % within minutes and other work shares its 2 cores, so only figures taken side by side
compare. Prints medians (ms), each sandbox's cost over bare, and B/A.

    git worktree add /tmp/before HEAD~1
    python3 bench/ab_runners.py /tmp/before [--rounds 20] [--block 5]

A is the other tree, B this one (or --b TREE). Run as root, as the sandbox runs in production.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
HELLO_CPP = '#include <iostream>\nint main() { std::cout << "hi" << std::endl; }\n'
BIG_CPP = '#include <cstdio>\nint big[1 << 20] = {1};\nint main() { std::printf("%d", big[0]); }\n'
PROGRAMS = {  # name: (language, source, bare argv; None: the compiled source)
    "python print(1)": ("python", "print(1)", ["/usr/bin/python3", "-c", "print(1)"]),
    "node console.log(1)": (
        "javascript",
        "console.log(1)",
        ["/usr/bin/node", "-e", "console.log(1)"],
    ),
    "C++ hello binary": ("c++", HELLO_CPP, None),
    "C++ 4 MB binary": ("c++", BIG_CPP, None),
}
# each side: a Sandbox of its tree, answering {"language", "source", "count"} lines with the
# wall times (ms) of that many runs
SIDE = """
import json, sys, time
from runners import Limits, Program, Sandbox, SandboxConfig
with Sandbox(SandboxConfig(slots=1, work_root=sys.argv[1])) as sandbox:
    limits = Limits(wall_timeout_s=30)
    print("ready", flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        program = Program(ask["language"], ask["source"])
        times = []
        for _ in range(ask["count"]):
            started = time.perf_counter()
            result = sandbox.run(program, limits)
            times.append((time.perf_counter() - started) * 1000)
            assert result.exit_code == 0, result
        print(json.dumps(times), flush=True)
"""


class Side:
    """One tree's sandbox, in a process of its own."""

    def __init__(self, tree: str, work_root: str) -> None:
        env = {**CLEAN_ENV, "PYTHONPATH": tree, "PYTHONDONTWRITEBYTECODE": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", SIDE, work_root],
            cwd=tree,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdout.readline() == "ready\n"

    def times(self, language: str, source: str, count: int) -> list[float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        ask = {"language": language, "source": source, "count": count}
        self.process.stdin.write(json.dumps(ask) + "\n")
        self.process.stdin.flush()
        return [float(ms) for ms in json.loads(self.process.stdout.readline())]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


def bare_times(argv: list[str], count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run(argv, env=CLEAN_ENV, stdout=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("a", help="the other checkout (A)")
    parser.add_argument("--b", default=REPO, help="this checkout by default (B)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=5, help="runs a side does in a row")
    options = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="ab-runners-")
    roots = [tempfile.mkdtemp(dir="/var/tmp", prefix="livecode-ab-") for _ in range(2)]
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    sides: list[Side] = []
    try:
        bare: dict[str, list[str]] = {}
        for name, (_language, source, argv) in PROGRAMS.items():
            if argv is None:
                path = os.path.join(scratch, f"{len(bare)}")
                with open(path + ".cpp", "w") as out:
                    out.write(source)
                compile_argv = ["/usr/bin/g++", "-O2", "-std=gnu++17", "-o", path, path + ".cpp"]
                subprocess.run(compile_argv, env=CLEAN_ENV, check=True)
                argv = [path]
            bare[name] = argv
        sides = [Side(options.a, roots[0]), Side(options.b, roots[1])]
        figures: dict[str, dict[str, list[float]]] = {}
        for name in bare:
            figures[name] = {"bare": [], "A": [], "B": []}
        for language, source, _argv in PROGRAMS.values():  # warm-up: compiles, caches
            for side in sides:
                side.times(language, source, 2)
        for index in range(options.rounds):
            order = ["bare", "A", "B"] if index % 2 == 0 else ["B", "A", "bare"]
            for name, (language, source, _argv) in PROGRAMS.items():
                for who in order:
                    if who == "bare":
                        got = bare_times(bare[name], options.block)
                    else:
                        got = sides[who == "B"].times(language, source, options.block)
                    figures[name][who] += got
        print(f"{options.rounds} rounds of {options.block} runs each; A {options.a}, B {options.b}")
        print(f"{'median ms':<22} {'bare':>7} {'A':>7} {'B':>7}  {'A-bare':>7} {'B-bare':>7}  B/A")
        for name, measured in figures.items():
            bare_ms, a_ms, b_ms = (statistics.median(measured[w]) for w in ("bare", "A", "B"))
            print(
                f"{name:<22} {bare_ms:7.2f} {a_ms:7.2f} {b_ms:7.2f}  {a_ms - bare_ms:+7.2f} "
                f"{b_ms - bare_ms:+7.2f}  {b_ms / a_ms:5.3f}"
            )
    finally:
        for side in sides:
            side.close()
        for path in (scratch, *roots):
            shutil.rmtree(path, ignore_errors=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
