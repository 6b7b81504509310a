"""Benchmark runners: bare interpreter vs the full sandbox, compile cold vs cache, runs/s.

Prints figures (median and p90 in ms), no asserts. Run as root on the target machine:
``python3 bench/bench_runners.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runners import Limits, Program, Sandbox, SandboxConfig, WarmConfig  # noqa: E402

CLEAN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
HELLO_CPP = '#include <iostream>\nint main() { std::cout << "hi" << std::endl; }\n'
# a 4 MB binary (initialized data): the sandbox copies the binary in at every start
BIG_CPP = (
    '#include <cstdio>\nint big[1 << 20] = {1};\nint main() { std::printf("%d\\n", big[0]); }\n'
)
BITS_CPP = '#include <bits/stdc++.h>\nint main() { std::cout << "hi" << std::endl; }\n'


def measure(action: Callable[[], object], rounds: int) -> list[float]:
    """Wall time of each call, in ms (one warm-up call first)."""
    action()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return times


def p90(times: list[float]) -> float:
    return sorted(times)[max(0, int(len(times) * 0.9) - 1)]


def bare(argv: list[str]) -> Callable[[], object]:
    return lambda: subprocess.run(argv, env=CLEAN_ENV, stdout=subprocess.DEVNULL, check=True)


def sandboxed(sandbox: Sandbox, program: Program) -> Callable[[], object]:
    limits = Limits(wall_timeout_s=30)

    def action() -> object:
        result = sandbox.run(program, limits)
        assert result.exit_code == 0, result
        return result

    return action


def row(name: str, bare_ms: list[float], box_ms: list[float]) -> None:
    b, s = statistics.median(bare_ms), statistics.median(box_ms)
    print(
        f"{name:<26} bare {b:7.1f} / p90 {p90(bare_ms):7.1f}   sandbox {s:7.1f} / p90 "
        f"{p90(box_ms):7.1f}   +{s - b:6.1f} ms  x{s / b:5.2f}"
    )


def throughput(action: Callable[[], object], concurrency: int, seconds: float) -> float:
    count = [0] * concurrency
    stop = time.monotonic() + seconds

    def worker(index: int) -> None:
        while time.monotonic() < stop:
            action()
            count[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(count) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--starts-only", action="store_true", help="only the start figures")
    options = parser.parse_args()
    rounds = options.rounds
    scratch = tempfile.mkdtemp(prefix="bench-runners-")
    work_root = tempfile.mkdtemp(dir="/var/tmp", prefix="livecode-bench-")
    print(f"load average before: {os.getloadavg()[0]:.2f}   rounds: {rounds}")
    try:
        with Sandbox(SandboxConfig(slots=4, work_root=work_root)) as sandbox:
            print("measures:", sandbox.measures())
            while not sandbox.measures()["precompiled_header"]:
                time.sleep(0.2)  # built in the background at start: let it finish first
            print("\n== start: bare interpreter vs full sandbox (median / p90 ms)")
            row(
                "python3 -c print(1)",
                measure(bare(["/usr/bin/python3", "-c", "print(1)"]), rounds),
                measure(sandboxed(sandbox, Program("python", "print(1)")), rounds),
            )
            cold_config = SandboxConfig(slots=4, work_root=work_root, warm=WarmConfig(False))
            with Sandbox(cold_config) as cold_sandbox:
                row(
                    "python3 -c print(1), cold",
                    measure(bare(["/usr/bin/python3", "-c", "print(1)"]), rounds),
                    measure(sandboxed(cold_sandbox, Program("python", "print(1)")), rounds),
                )
            row(
                "node -e console.log(1)",
                measure(bare(["/usr/bin/node", "-e", "console.log(1)"]), rounds),
                measure(sandboxed(sandbox, Program("javascript", "console.log(1)")), rounds),
            )
            hello = os.path.join(scratch, "hello")
            source = os.path.join(scratch, "hello.cpp")
            with open(source, "w") as out:
                out.write(HELLO_CPP)
            compile_hello = ["/usr/bin/g++", "-O2", "-std=gnu++17", "-o", hello, source]
            subprocess.run(compile_hello, env=CLEAN_ENV, check=True)
            cpp = Program("c++", HELLO_CPP)
            row(
                "C++ hello binary",
                measure(bare([hello]), rounds),
                measure(sandboxed(sandbox, cpp), rounds),  # cache hit: run only
            )
            big = os.path.join(scratch, "big")
            big_source = os.path.join(scratch, "big.cpp")
            with open(big_source, "w") as out:
                out.write(BIG_CPP)
            compile_big = ["/usr/bin/g++", "-O2", "-std=gnu++17", "-o", big, big_source]
            subprocess.run(compile_big, env=CLEAN_ENV, check=True)
            row(
                f"C++ {os.path.getsize(big) >> 20} MB binary",
                measure(bare([big]), rounds),
                measure(sandboxed(sandbox, Program("c++", BIG_CPP)), rounds),
            )
            if options.starts_only:
                return

            print("\n== C++ compile (median / p90 ms)")
            compile_rounds = max(5, rounds // 4)

            def cold(text: str) -> Callable[[], object]:
                return lambda: sandboxed(sandbox, Program("c++", f"// {uuid.uuid4()}\n{text}"))()

            row(
                "g++ hello compile+run",
                measure(bare(compile_hello), compile_rounds),
                measure(cold(HELLO_CPP), compile_rounds),
            )
            bits_source = os.path.join(scratch, "bits.cpp")
            with open(bits_source, "w") as out:
                out.write(BITS_CPP)
            compile_bits = ["/usr/bin/g++", "-O2", "-std=gnu++17", "-o", hello, bits_source]
            row(
                "g++ bits/stdc++.h (PCH)",
                measure(bare(compile_bits), compile_rounds),
                measure(cold(BITS_CPP), compile_rounds),
            )
            hit = measure(sandboxed(sandbox, cpp), rounds)
            cold_hello = measure(cold(HELLO_CPP), compile_rounds)
            print(
                f"C++ hello cold {statistics.median(cold_hello):.1f} ms vs cache hit "
                f"{statistics.median(hit):.1f} ms"
            )

            print(f"\n== throughput: python print(1), runs/s over {options.seconds:g} s")
            py = sandboxed(sandbox, Program("python", "print(1)"))
            py_bare = bare(["/usr/bin/python3", "-c", "print(1)"])
            for concurrency in (2, 3, 4):
                b = throughput(py_bare, concurrency, options.seconds)
                s = throughput(py, concurrency, options.seconds)
                print(
                    f"concurrency {concurrency}: bare {b:6.1f}/s   sandbox {s:6.1f}/s   "
                    f"{s / b * 100:5.1f} %"
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(work_root, ignore_errors=True)
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
