"""A/B of two checkouts of livecode, side by side: the way to tell whether a change is faster.

Starts an embedded server (or, with --distributed, a web + worker pair on PostgreSQL and
Redis) from each tree, then measures runs/s at one concurrency in alternating slices, so that
the machine's drift (20-30 % within minutes here) touches both alike. Prints each slice, the
B/A ratio and the server processes' CPU per run.

    git worktree add /tmp/before HEAD~1
    python3 bench/ab_service.py /tmp/before [--concurrency 4] [--seconds 3] [--rounds 6]

A is the other tree, B this one (or --b TREE).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator

import sqlalchemy as sa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_service import (  # noqa: E402
    POSTGRES_URL,
    REDIS_URL,
    REPO,
    UNLIMITED,
    cpu_seconds,
    wait_ready,
    ws_throughput,
)


@contextlib.contextmanager
def servers(tree: str, port: int, distributed: bool, redis_db: int) -> Iterator[list[int]]:
    """Yield the pids of the server processes of `tree`, ready on `port`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECODE_")}
    env.update(UNLIMITED, LIVECODE_PORT=str(port), PYTHONPATH=tree, LIVECODE_LOG_LEVEL="WARNING")
    with contextlib.ExitStack() as stack:
        if distributed:
            database = f"livecode_ab_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{database}"'))
            stack.callback(admin.dispose)
            stack.callback(_drop_database, admin, database)
            env["LIVECODE_DATABASE_URL"] = POSTGRES_URL.rsplit("/", 1)[0] + "/" + database
            # The Redis of LIVECODE_BENCH_REDIS_URL (bench_service's), two databases of it.
            env["LIVECODE_REDIS_URL"] = f"{REDIS_URL.rsplit('/', 1)[0]}/{redis_db}"
            subprocess.run(
                [sys.executable, "-m", "livecode", "init-db"],
                env=env,
                cwd=tree,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            roles = ["worker", "serve"]
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            env["LIVECODE_DATABASE_URL"] = f"sqlite:///{tmp}/ab.db"
            roles = ["serve"]
        children = []
        for role in roles:
            child = subprocess.Popen([sys.executable, "-m", "livecode", role], env=env, cwd=tree)
            children.append(child)
            stack.callback(child.wait, 60)
            stack.callback(child.terminate)
        wait_ready(f"http://127.0.0.1:{port}")
        yield [child.pid for child in children]


def _drop_database(admin: sa.Engine, database: str) -> None:
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("a", help="the other checkout (A)")
    parser.add_argument("--b", default=REPO, help="this checkout by default (B)")
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    port = 18500 + os.getpid() % 500
    rates: dict[str, list[float]] = {"A": [], "B": []}
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    with (
        servers(args.a, port, args.distributed, 12) as pids_a,
        servers(args.b, port + 1, args.distributed, 11) as pids_b,
    ):
        sides = {
            "A": (f"http://127.0.0.1:{port}", pids_a),
            "B": (f"http://127.0.0.1:{port + 1}", pids_b),
        }
        for url, _ in sides.values():
            asyncio.run(ws_throughput(url, args.concurrency, 1.0))  # warm up
        for round_number in range(args.rounds):
            for side in ("A", "B") if round_number % 2 == 0 else ("B", "A"):
                url, pids = sides[side]
                before = cpu_seconds(pids)
                rate = asyncio.run(ws_throughput(url, args.concurrency, args.seconds))
                rates[side].append(rate)
                cpu[side].append((cpu_seconds(pids) - before) * 1000 / (rate * args.seconds))
            print(
                f"round {round_number}: A {rates['A'][-1]:6.1f} runs/s  B {rates['B'][-1]:6.1f}"
                f"  B/A {rates['B'][-1] / rates['A'][-1]:.3f}   server CPU ms/run"
                f" A {cpu['A'][-1]:.2f}  B {cpu['B'][-1]:.2f}",
                flush=True,
            )
    ratios = [b / a for a, b in zip(rates["A"], rates["B"], strict=True)]
    print(
        f"\nB/A runs/s: median {statistics.median(ratios):.3f}, mean {statistics.mean(ratios):.3f}"
        f"; server CPU ms/run A {statistics.mean(cpu['A']):.2f}, B {statistics.mean(cpu['B']):.2f}"
    )


if __name__ == "__main__":
    main()
