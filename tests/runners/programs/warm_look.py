"""Prints what an earlier run of the same warm interpreter left behind: found: [] when nothing."""

import builtins
import os
import signal
import sys

found = []
for path in (
    "/tmp/left",
    "/box/left",
    "/dev/shm/left",
    "/proc/1/cwd/left",
    "/proc/1/root/left",
    "/proc/1/root/tmp/left_root",
):
    if os.path.exists(path):
        found.append(path)
found += [f"env {name}" for name in ("LEFT", "LEFT_PUT") if name in os.environ]
found += [f"module {name}" for name in ("left_module", "json", "threading") if name in sys.modules]
if hasattr(builtins, "print_left") or len([1, 2]) != 2:
    found.append("builtins")
if "/tmp/left_path" in sys.path:
    found.append("sys.path")
if sys.getrecursionlimit() != 1000:
    found.append("recursion limit")
for number in (signal.SIGTERM, signal.SIGUSR1):
    if signal.getsignal(number) is not signal.SIG_DFL:
        found.append(f"handler of {number!r}")
pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
if pids != [1, os.getpid()]:
    found.append(f"processes {pids}")
import threading  # noqa: E402

if threading.active_count() != 1:
    found.append("threads")
print("found:", found)
