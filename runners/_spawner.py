"""Per-slot spawner: a single-threaded process living in its slot's cgroups.

Started once per slot as ``python3 -I -S _spawner.py SOCKFD CONTROLLER=CGROUP_DIR...`` (stdlib
only, not imported by runners); this is the fallback of the C spawner (_cspawner.py), which
speaks the same protocol. It joins the slot's cgroups once, so each run inherits them without
a per-run cgroup move (a move waits for an RCU grace period, ~9 ms). Protocol over a
SOCK_SEQPACKET socket, one message each, fields separated by NUL bytes (empty = none):

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

At start it enters a network namespace of its own (when root), answering "ready netns", and
sets its oom_score_adj to -1000 (its runs get 1000): the OOM killer never picks it.
Before each run it sets the memory limit (memory_bytes plus its own usage) and pids.max.
Being single-threaded it may fork and run Python code before exec, unlike the threaded worker.
It is a child subreaper: everything the run leaves behind is reparented here, swept and reaped.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_MAX_FDS = 16
_MAX_REQUEST = 16 << 20
_FD_END = 0x7FFFFFFF  # above any fd number
# The OOM killer never picks the spawner (root, in the slot's memory cgroup, where a run can
# fill memory with pages of no process: memfd, tmpfs), and picks the runs first
_OOM_NEVER = -1000
# what the spawner's own pages may grow by over its start-up figure
_OWN_SLACK = 8 << 20
_OOM_FIRST = 1000


@dataclass
class Request:
    uid: int | None
    gid: int | None
    cwd: str | None
    memory: int | None
    pids_max: int | None
    rlimits: list[tuple[int, int, int]]
    argv: list[bytes]
    env: list[bytes]


def parse(message: bytes) -> Request:
    """Parse a run request (see the module docstring)."""
    items = message.split(b"\0")

    def optional(item: bytes) -> int | None:
        return int(item) if item else None

    count = int(items[6])
    rlimits = [
        (int(items[7 + 3 * k]), int(items[8 + 3 * k]), int(items[9 + 3 * k])) for k in range(count)
    ]
    at = 7 + 3 * count
    argc = int(items[at])
    argv = items[at + 1 : at + 1 + argc]
    at += 1 + argc
    env = items[at + 1 : at + 1 + int(items[at])]
    return Request(
        uid=optional(items[1]),
        gid=optional(items[2]),
        cwd=items[3].decode() if items[3] else None,
        memory=optional(items[4]),
        pids_max=optional(items[5]),
        rlimits=rlimits,
        argv=argv,
        env=env,
    )


class Cgroups:
    """The slot's cgroup directories by controller."""

    def __init__(self, specs: list[str]) -> None:
        self.dirs: dict[str, str] = {}
        for spec in specs:
            controller, _, directory = spec.partition("=")
            self.dirs[controller] = directory
        self.own_usage = 0

    def measure_own_usage(self) -> None:
        """Once joined, before any run: what the memory cgroup holds is the spawner's."""
        memory = self.dirs.get("memory")
        if memory:
            with contextlib.suppress(OSError):  # best effort: it frees what it can
                _write(memory, "memory.force_empty", 0)  # what an earlier spawner left
            self.own_usage = _read_int(memory, "memory.usage_in_bytes")

    def prepare(self, request: Request) -> dict[str, int]:
        before: dict[str, int] = {}
        memory = self.dirs.get("memory")
        if memory and request.memory is not None:
            baseline = _read_int(memory, "memory.usage_in_bytes")
            # The spawner's own pages are charged here too: the limit leaves room for them. Not
            # for the page cache earlier runs left charged here: counted in, it would raise the
            # limit run after run without bound. The kernel reclaims that cache under pressure.
            allowance = min(baseline, self.own_usage + _OWN_SLACK)
            _set_memory_limit(memory, request.memory + allowance)
            _write(memory, "memory.max_usage_in_bytes", 0)
            # the peak is measured from the usage once the limit is set: setting it may reclaim
            before["memory"] = _read_int(memory, "memory.usage_in_bytes")
            before["oom_kill"] = _oom_kills(memory)
        pids = self.dirs.get("pids")
        if pids and request.pids_max is not None:
            _write(pids, "pids.max", request.pids_max)
        cpuacct = self.dirs.get("cpuacct")
        if cpuacct:
            before["cpu_ns"] = _read_int(cpuacct, "cpuacct.usage")
        return before

    def finish(self, before: dict[str, int]) -> tuple[int, int, int]:
        cpu_ns = peak = -1
        oom = 0
        if "cpu_ns" in before:
            cpu_ns = _read_int(self.dirs["cpuacct"], "cpuacct.usage") - before["cpu_ns"]
        if "memory" in before:
            memory = self.dirs["memory"]
            peak = _read_int(memory, "memory.max_usage_in_bytes") - before["memory"]
            oom = int(_oom_kills(memory) > before["oom_kill"])
        return cpu_ns, peak, oom


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    os.set_inheritable(sock.fileno(), False)  # passed to us inheritable: never to a run
    cgroups = Cgroups(sys.argv[2:])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the caller
    _set_oom_score_adj(_OOM_NEVER)
    for directory in cgroups.dirs.values():
        with open(os.path.join(directory, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    cgroups.measure_own_usage()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    sock.send(b"ready netns" if _private_network(libc) else b"ready")
    while True:
        message, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, _MAX_FDS)
        if not message:
            return  # the Sandbox is gone
        try:
            if message == b"runfd":
                message = _read_request(fds.pop()) if fds else b""
                if not message.startswith(b"run\0"):
                    sock.send(b"error cannot read the request")
                    continue
            if message.startswith(b"run\0"):
                if not _run(sock, message, fds, cgroups):
                    return
        finally:
            for fd in fds:
                _close(fd)


def _read_request(fd: int) -> bytes:
    """The request in a memfd (closed here); empty when it cannot be read or is too long."""
    try:
        size = os.fstat(fd).st_size
        if size > _MAX_REQUEST:
            return b""
        request = b""
        while len(request) < size:
            part = os.pread(fd, size - len(request), len(request))
            if not part:
                break
            request += part
        return request
    except OSError:
        return b""
    finally:
        _close(fd)


def _private_network(libc: ctypes.CDLL) -> bool:
    """Enter a network namespace of our own with only lo (up), for this slot's runs.

    Shared by the slot's runs one after another: creating and destroying one per run costs
    about 1 ms of CPU. Needs CAP_SYS_ADMIN; False without it (bwrap then makes one per run).
    """
    if libc.unshare(CLONE_NEWNET) != 0:
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            request = struct.pack("16sH", b"lo", 0)
            flags = struct.unpack("16sH", fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))
    except OSError:
        pass  # no loopback: still no network
    return True


def _run(sock: socket.socket, message: bytes, fds: list[int], cgroups: Cgroups) -> bool:
    """Start one run, wait for it and report; False when the Sandbox went away meanwhile."""
    try:
        request = parse(message)
        before = cgroups.prepare(request)
    except (ValueError, IndexError, OSError) as exc:
        sock.send(f"error cannot prepare the run: {exc}".encode())
        return True
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(error_r)
        _exec_child(request, fds, error_w)
    os.close(error_w)
    for fd in fds:
        _close(fd)
    fds.clear()
    error = os.read(error_r, 4096)
    os.close(error_r)
    if error:
        os.waitpid(pid, 0)
        sock.send(b"error " + error)
        return True
    sock.send(f"pid {pid}".encode())
    pidfd = os.pidfd_open(pid)
    alive = True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    try:
        while True:
            events = dict(poller.poll())
            if sock.fileno() in events:
                message = sock.recv(1 << 16)
                if not message:
                    alive = False
                    os.kill(pid, signal.SIGKILL)  # safe: pid is not reaped yet
                    poller.unregister(sock)
                elif message == b"kill":
                    os.kill(pid, signal.SIGKILL)
            if pidfd in events:
                break
    finally:
        os.close(pidfd)
    _pid, status, usage = os.wait4(pid, 0)
    utime, stime, maxrss = usage.ru_utime, usage.ru_stime, usage.ru_maxrss
    for usage in _reap_everything(list(cgroups.dirs.values()), request.uid):
        utime += usage.ru_utime
        stime += usage.ru_stime
        maxrss = max(maxrss, usage.ru_maxrss)
    cpu_ns, peak, oom = cgroups.finish(before)
    if alive:
        utime_us, stime_us = int(utime * 1e6), int(stime * 1e6)
        sock.send(f"exit {status} {utime_us} {stime_us} {maxrss} {cpu_ns} {peak} {oom}".encode())
    return alive


def _exec_child(request: Request, fds: list[int], error_w: int) -> NoReturn:
    try:
        # The error pipe must survive until exec (it is close-on-exec), so that a failure of
        # anything below reaches the spawner instead of looking like a run that exited 127.
        error_w = fcntl.fcntl(error_w, fcntl.F_DUPFD_CLOEXEC, 64 + 2 * _MAX_FDS)
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64 + _MAX_FDS) for fd in fds]
        for target, fd in enumerate(high):
            os.dup2(fd, target)  # dup2 clears close-on-exec
        # every other fd, whatever its number (close_range): bwrap hands what it inherits on
        os.closerange(len(high), error_w)
        os.closerange(error_w + 1, _FD_END)
        _set_oom_score_adj(_OOM_FIRST)  # before dropping root: lowering needs it
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)  # Python ignores these; exec would keep that
        for resource_id, soft, hard in request.rlimits:
            resource.setrlimit(resource_id, (soft, hard))
        if request.cwd:
            os.chdir(request.cwd)
        uid, gid = request.uid, request.gid
        if gid is not None:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
        if uid is not None:
            os.setresuid(uid, uid, uid)
        env = dict(item.split(b"=", 1) for item in request.env)
        os.execve(request.argv[0], request.argv, env)
    except BaseException as exc:  # noqa: BLE001 - report anything, then die
        try:
            os.write(error_w, f"cannot start {request.argv[0].decode()}: {exc}".encode())
        finally:
            os._exit(127)


def _reap_everything(cgroup_dirs: list[str], uid: int | None) -> Iterator[resource.struct_rusage]:
    """Kill and reap every process the run left behind; yield their rusage."""
    started = time.monotonic()
    swept_uid = False
    while True:
        try:
            pid, _status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            yield usage
            continue
        # children remain (bwrap's pid 1 winding down, or a leftover): kill them all
        for directory in cgroup_dirs:
            _kill_cgroup(directory)
        if not cgroup_dirs and uid is not None and not swept_uid:
            _kill_uid(uid)
            swept_uid = True
        time.sleep(0.0002 if time.monotonic() - started < 0.05 else 0.005)
    for directory in cgroup_dirs:
        while _kill_cgroup(directory) and time.monotonic() - started < 10:
            time.sleep(0.001)  # not our children (cannot be), but never leave one behind


def _kill_cgroup(directory: str) -> bool:
    me = os.getpid()
    found = False
    try:
        with open(os.path.join(directory, "cgroup.procs")) as procs:
            pids = [int(line) for line in procs if line.strip()]
    except OSError:
        return False
    for pid in pids:
        if pid != me:
            found = True
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return found


def _kill_uid(uid: int) -> None:
    # kill(-1) as the slot's uid reaches every process of that uid and nothing else
    pid = os.fork()
    if pid == 0:
        try:
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _set_memory_limit(directory: str, limit_bytes: int) -> None:
    current = _read_int(directory, "memory.limit_in_bytes")
    has_memsw = os.path.exists(os.path.join(directory, "memory.memsw.limit_in_bytes"))
    # memsw must stay >= the memory limit at every step
    order = ["memory.limit_in_bytes"]
    if has_memsw:
        order = (
            ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
            if limit_bytes > current
            else ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
        )
    for name in order:
        try:
            _write(directory, name, limit_bytes)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            _write(directory, "memory.force_empty", 0)  # page cache of the last run
            _write(directory, name, limit_bytes)


def _oom_kills(directory: str) -> int:
    with open(os.path.join(directory, "memory.oom_control")) as control:
        for line in control:
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    return 0


def _read_int(directory: str, name: str) -> int:
    with open(os.path.join(directory, name)) as file:
        return int(file.read().split()[0])


def _write(directory: str, name: str, value: int) -> None:
    with open(os.path.join(directory, name), "w") as file:
        file.write(str(value))


def _set_oom_score_adj(value: int) -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write(str(value))
    except OSError:
        pass  # lowering needs CAP_SYS_RESOURCE: without it there is no memory cgroup either


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


if __name__ == "__main__":
    main()
