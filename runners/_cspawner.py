"""Builds the per-slot spawner from its C source (spawner.c) once per work root with gcc.

Each slot runs one spawner, started as ``spawner-DIGEST SOCKFD CONTROLLER=CGROUP_DIR...`` and
living in the slot's cgroups (its source says why it exists). The protocol, over a
SOCK_SEQPACKET socket, one message each, fields separated by NUL bytes (empty = none)::

    -> run uid gid cwd memory_bytes pids_max N (resource soft hard)*N argc argv* envc env*
       + fds (become fd 0..n-1)
       or "runfd" + fds and last a memfd holding that request (a long one: a message is capped
       by the socket's send buffer)
    <- "ready" or "ready netns"      once, at start
    <- "pid N"                       or "error text" when the exec failed
    -> "kill"                        (optional, any time before the exit report)
    <- "exit STATUS UTIME_US STIME_US MAXRSS_KIB CPU_NS MEMORY_PEAK OOM"
       after every process is reaped; CPU_NS (cpuacct) and MEMORY_PEAK (memory cgroup, bytes
       over the spawner's own usage) are -1 without those cgroups, OOM is 1 after an OOM kill

At start the spawner enters a network namespace of its own (when root), answering "ready
netns", and sets its oom_score_adj to -1000 (its runs get 1000): the OOM killer never picks it.
Before each run it sets the memory limit (memory_bytes plus its own usage) and pids.max.
Closing our end of the socket (EOF) makes it kill any run and exit.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from importlib import resources

from runners.errors import SandboxUnavailable

_GCC = "/usr/bin/gcc"
_SOURCE = "spawner.c"


def build(work_root: str) -> str:
    """Return the path of the compiled spawner, built with gcc once per source.

    Raises SandboxUnavailable when gcc is missing or fails: the sandbox cannot start a program
    without its spawner.
    """
    if not os.access(_GCC, os.X_OK):
        raise SandboxUnavailable(
            f"the sandbox builds its spawner with gcc, and {_GCC} is missing: install gcc "
            "(Debian/Ubuntu: apt-get install gcc; it comes with g++)"
        )
    # Compiled from these very bytes, never from the package file again: what is built is what
    # the digest names.
    source = resources.files("runners").joinpath(_SOURCE).read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    binary = os.path.join(work_root, f"spawner-{digest}")
    if os.access(binary, os.X_OK):
        return binary
    with tempfile.TemporaryDirectory(dir=work_root) as scratch:
        source_path = os.path.join(scratch, _SOURCE)
        with open(source_path, "wb") as out:
            out.write(source)
        built = os.path.join(scratch, "spawner")
        try:
            done = subprocess.run(
                [_GCC, "-O2", "-Wall", "-o", built, source_path],
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                capture_output=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"cannot build the sandbox's spawner: {exc}") from exc
        if done.returncode != 0:
            raise SandboxUnavailable(
                f"cannot build the sandbox's spawner: {done.stderr.decode(errors='replace')}"
            )
        os.chmod(built, 0o700)
        os.replace(built, binary)
    return binary
