"""Per-slot spawner: a single-threaded process living in its slot's cgroups.

Started once per slot as ``python3 -I -S _spawner.py SOCKFD CGROUP_DIR...`` (stdlib only, not
imported by runners). It joins the slot's cgroups once, so each run inherits them without a
per-run cgroup move (a move waits for an RCU grace period, ~9 ms). Protocol over a
SOCK_SEQPACKET socket, one JSON object per message:

    -> {"op": "run", "argv", "env", "rlimits", "uid", "gid", "cwd"} + fds (become fd 0..n-1)
    <- {"pid": N}                    or {"error": "text"} when the exec failed
    -> {"op": "kill"}                (optional, any time before the exit report)
    <- {"exit": wait status, "utime": s, "stime": s, "maxrss": KiB}  after every process is reaped

Being single-threaded it may fork and run Python code before exec, unlike the threaded worker.
It is a child subreaper: everything the run leaves behind is reparented here, swept and reaped.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import resource
import select
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any, NoReturn

PR_SET_CHILD_SUBREAPER = 36
_MAX_FDS = 16


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    cgroup_dirs = sys.argv[2:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the caller
    for directory in cgroup_dirs:
        with open(os.path.join(directory, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    sock.send(b'{"ready": true}')
    while True:
        message, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, _MAX_FDS)
        if not message:
            return  # the Sandbox is gone
        request = json.loads(message)
        try:
            if request.get("op") == "run":
                if not _run(sock, request, fds, cgroup_dirs):
                    return
        finally:
            for fd in fds:
                _close(fd)


def _run(
    sock: socket.socket, request: dict[str, Any], fds: list[int], cgroup_dirs: list[str]
) -> bool:
    """Start one run, wait for it and report; False when the Sandbox went away meanwhile."""
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
        sock.send(json.dumps({"error": error.decode(errors="replace")}).encode())
        return True
    sock.send(json.dumps({"pid": pid}).encode())
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
                elif json.loads(message).get("op") == "kill":
                    os.kill(pid, signal.SIGKILL)
            if pidfd in events:
                break
    finally:
        os.close(pidfd)
    _pid, status, usage = os.wait4(pid, 0)
    utime, stime, maxrss = usage.ru_utime, usage.ru_stime, usage.ru_maxrss
    for usage in _reap_everything(cgroup_dirs, request.get("uid")):
        utime += usage.ru_utime
        stime += usage.ru_stime
        maxrss = max(maxrss, usage.ru_maxrss)
    if alive:
        report = {"exit": status, "utime": utime, "stime": stime, "maxrss": maxrss}
        sock.send(json.dumps(report).encode())
    return alive


def _exec_child(request: dict[str, Any], fds: list[int], error_w: int) -> NoReturn:
    try:
        # The error pipe must survive until exec (it is close-on-exec), so that a failure of
        # anything below reaches the spawner instead of looking like a run that exited 127.
        error_w = fcntl.fcntl(error_w, fcntl.F_DUPFD_CLOEXEC, 64 + 2 * _MAX_FDS)
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64 + _MAX_FDS) for fd in fds]
        for target, fd in enumerate(high):
            os.dup2(fd, target)  # dup2 clears close-on-exec
        os.closerange(len(high), 64 + _MAX_FDS)
        for fd in high:
            _close(fd)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)  # Python ignores these; exec would keep that
        for resource_id, soft, hard in request["rlimits"]:
            resource.setrlimit(resource_id, (soft, hard))
        if request.get("cwd"):
            os.chdir(request["cwd"])
        uid, gid = request.get("uid"), request.get("gid")
        if gid is not None:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
        if uid is not None:
            os.setresuid(uid, uid, uid)
        argv = request["argv"]
        os.execve(argv[0], argv, request["env"])
    except BaseException as exc:  # noqa: BLE001 - report anything, then die
        try:
            os.write(error_w, f"cannot start {request['argv'][0]}: {exc}".encode())
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


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


if __name__ == "__main__":
    main()
