"""The spawner client: builds the per-slot spawner (spawner.c) and speaks its protocol.

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
    <- "exit STATUS UTIME_US STIME_US MAXRSS_KIB CPU_NS MEMORY_PEAK OOM LEFT"
       after every process is reaped; CPU_NS (cpuacct) and MEMORY_PEAK (memory cgroup, bytes
       over the spawner's own usage) are -1 without those cgroups, OOM is 1 after an OOM kill,
       LEFT is 1 when what the run left in flight in Unix sockets was not freed in time (below)

A warm spawner (one more per slot, with a uid and cgroups of its own) hosts the slot's warm
Python interpreter (warm.c) and starts Python runs by forking it::

    -> warm + a run request as above (the interpreter's bwrap command line)
       + fds; the spawner adds its end of a new socket as one more fd
    <- "ready"                       once the interpreter said so, or "error text"
    -> "warmrun\0memory_bytes\0pids_max" + fds stdin, stdout, stderr, source, request (warm.py)
    <- "pid N", "error text", or "gone" (no interpreter, or it broke the protocol: killed)
    -> "kill"                        (optional)
    <- "exit ..." as above; the run alone, above the interpreter's own usage

At start the spawner enters a network namespace of its own (when root), answering "ready
netns", and sets its oom_score_adj to -1000 (its runs get 1000): the OOM killer never picks it.
Before each run it sets the memory limit (memory_bytes plus its own usage) and pids.max; a
limit below what an earlier run left charged (freed late by the kernel, e.g. with the run's IPC
namespace) waits for it, bounded. Closing our end of the socket (EOF) makes it kill any run and
exit.

Before each exit report it makes the kernel free what the run left in flight in a cycle of Unix
sockets (memfds, files, sockets bound to an abstract name: no process holds them), which would
otherwise stay charged to the slot's memory cgroup and reachable from the network namespace the
next runs share, and waits (bounded) until its memory cgroup's usage is back to its own. LEFT=1
says it is not: the spawner is not trusted with another run, and its slot is reset. Given the
argument "unsandboxed" (mode "none", whose runs reach the host's Unix sockets), it skips this.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from runners.errors import RunnerError, SandboxUnavailable

_GCC = "/usr/bin/gcc"
_SOURCE = "spawner.c"
# the longest wait for a reply of the spawner ("ready", "pid N"); beyond it the slot is reset
_REPLY_TIMEOUT_S = 30.0
# a longer request (long program arguments) goes through a memfd: a SOCK_SEQPACKET message is
# capped by the socket's send buffer (~200 KiB by default)
_INLINE_REQUEST_BYTES = 32 << 10


class SpawnerGone(RunnerError):
    """The spawner broke the protocol: died, went silent, or sent what it should not."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A run request: the process to start, whom as, and within which limits."""

    uid: int | None  # also the gid; None: stay root (not root: stay who we are)
    cwd: str | None
    memory_bytes: int | None  # the memory cgroup's limit; None: leave it
    pids_max: int | None  # the pids cgroup's limit; None: leave it
    rlimits: Sequence[tuple[int, int, int]]  # (resource, soft, hard)
    argv: Sequence[str]
    env: Sequence[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Exit:
    """The spawner's exit report, as sent."""

    status: int  # as from waitpid
    utime_us: int
    stime_us: int
    maxrss_kib: int
    cpu_ns: int  # -1 without a cpuacct cgroup
    memory_peak_bytes: int  # -1 without a memory cgroup
    oom_killed: bool
    left_behind: bool  # what the run left in flight is still charged or reachable


def build(work_root: str) -> str:
    """Return the path of the compiled spawner, built with gcc once per source.

    Raises SandboxUnavailable when gcc is missing or fails: the sandbox cannot start a program
    without its spawner.
    """
    return build_c(work_root, _SOURCE, "spawner", mode=0o700)


def build_c(
    work_root: str, source_name: str, name: str, *, mode: int, flags: Sequence[str] = ()
) -> str:
    """Compile a C program of this package (`source_name`) into ``work_root/NAME-DIGEST`` once
    per source and `flags` (gcc's, after the source), with file mode `mode`; return its path.
    Raises SandboxUnavailable when gcc is missing or fails."""
    if not os.access(_GCC, os.X_OK):
        raise SandboxUnavailable(
            f"the sandbox builds its spawner with gcc, and {_GCC} is missing: install gcc "
            "(Debian/Ubuntu: apt-get install gcc; it comes with g++)"
        )
    # Compiled from these very bytes, never from the package file again: what is built is what
    # the digest names.
    source = resources.files("runners").joinpath(source_name).read_bytes()
    digest = hashlib.sha256(source + "\0".join(flags).encode()).hexdigest()[:16]
    binary = os.path.join(work_root, f"{name}-{digest}")
    if os.access(binary, os.X_OK):
        return binary
    with tempfile.TemporaryDirectory(dir=work_root) as scratch:
        source_path = os.path.join(scratch, source_name)
        with open(source_path, "wb") as out:
            out.write(source)
        built = os.path.join(scratch, name)
        try:
            done = subprocess.run(
                [_GCC, "-O2", "-Wall", "-o", built, source_path, *flags],
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                capture_output=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"cannot build the sandbox's {name}: {exc}") from exc
        if done.returncode != 0:
            raise SandboxUnavailable(
                f"cannot build the sandbox's {name}: {done.stderr.decode(errors='replace')}"
            )
        os.chmod(built, mode)
        os.replace(built, binary)
    return binary


class Spawner:
    """A slot's running spawner and our end of its socket. One run at a time; not thread-safe.

    Any anomaly (a wrong or missing reply, a send or receive error) marks it broken: it is not
    to be trusted with another run, and its slot replaces it.
    """

    def __init__(
        self, binary: str, cgroups: Mapping[str, str], slot_index: int, *, is_sandboxed: bool
    ) -> None:
        self.slot_index = slot_index
        self.is_broken = False
        self.in_flight = False  # a run was requested and its exit report not yet read
        self._sock: socket.socket | None = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        specs = [f"{controller}={path}" for controller, path in cgroups.items()]
        if not is_sandboxed:  # what its runs leave is not looked for: they reach the host
            specs.append("unsandboxed")
        try:
            self.process = subprocess.Popen(
                [binary, str(theirs.fileno()), *specs],
                pass_fds=(theirs.fileno(),),
                env={"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(_REPLY_TIMEOUT_S)  # a worker thread never waits on the spawner forever
        try:
            ready = ours.recv(4096)
        except OSError:
            ready = b""
        if ready not in (b"ready", b"ready netns"):
            ours.close()
            self.kill()
            raise RunnerError(f"the spawner of slot {slot_index} failed to start")
        # its runs use the spawner's own network namespace (only lo) instead of a new one each
        self.has_private_network = ready == b"ready netns"
        self._sock = ours

    def is_alive(self) -> bool:
        """Whether the spawner process has not exited."""
        return self.process.poll() is None

    def start_run(self, request: Request, fds: Sequence[int]) -> None:
        """Send a run request with the fds the process gets as 0, 1, 2...; return once it runs.

        Raises RunnerError when the program cannot be started (the spawner stays usable), and
        SpawnerGone on any anomaly.
        """
        assert self._sock is not None
        message = encoded = encode_request(request)
        request_fds: list[int] = []
        try:
            if len(encoded) > _INLINE_REQUEST_BYTES:
                # the last fd: the spawner takes it off the list
                request_fds.append(memfd("request", encoded))
                message = b"runfd"
            self.in_flight = True
            try:
                socket.send_fds(self._sock, [message], [*fds, *request_fds])
            except OSError as exc:  # EPIPE: the spawner is dead
                raise self._anomaly(f"failed: {exc}") from exc
        finally:
            for fd in request_fds:
                os.close(fd)
        reply = self._receive()
        if reply.startswith(b"error "):
            self.in_flight = False
            raise RunnerError(f"cannot start the program: {reply[6:].decode(errors='replace')}")
        if not reply.startswith(b"pid "):
            raise self._anomaly(f"sent {reply[:200]!r}")

    def start_warm(self, request: Request, fds: Sequence[int]) -> None:
        """Start the warm interpreter (its bwrap command line in `request`); return once it is
        ready. Raises RunnerError when it cannot start, SpawnerGone on any anomaly."""
        assert self._sock is not None
        try:
            socket.send_fds(self._sock, [encode_request(request, kind="warm")], list(fds))
        except OSError as exc:
            raise self._anomaly(f"failed: {exc}") from exc
        reply = self._receive()
        if reply.startswith(b"error "):
            raise RunnerError(
                f"cannot start the warm interpreter: {reply[6:].decode(errors='replace')}"
            )
        if reply != b"ready":
            raise self._anomaly(f"sent {reply[:200]!r}")

    def start_warm_run(
        self, memory_bytes: int | None, pids_max: int | None, fds: Sequence[int]
    ) -> None:
        """Ask the warm interpreter for a run (fds: stdin, stdout, stderr, source, request);
        return once it runs. Raises RunnerError when it cannot start, SpawnerGone on any
        anomaly (the interpreter is gone too)."""
        assert self._sock is not None
        message = "\0".join(
            ["warmrun", "" if memory_bytes is None else str(memory_bytes), str(pids_max or "")]
        )
        self.in_flight = True
        try:
            socket.send_fds(self._sock, [message.encode()], list(fds))
        except OSError as exc:
            raise self._anomaly(f"failed: {exc}") from exc
        reply = self._receive()
        if reply.startswith(b"error "):
            self.in_flight = False
            raise RunnerError(f"cannot start the program: {reply[6:].decode(errors='replace')}")
        if not reply.startswith(b"pid "):
            raise self._anomaly(f"sent {reply[:200]!r}")

    def fileno(self) -> int:
        """The socket's fd: readable once the exit report has come (or the spawner died)."""
        assert self._sock is not None
        return self._sock.fileno()

    def kill_run(self) -> None:
        """Ask for the run to be killed; its exit report follows."""
        if self._sock is not None:
            try:
                self._sock.send(b"kill")
            except OSError:
                self.is_broken = True  # the pump sees EOF, or gives up after its grace time

    def read_exit(self) -> Exit:
        """Wait for the exit report of the run."""
        reply = self._receive()
        fields = reply.split()
        try:
            if fields[:1] != [b"exit"] or len(fields) != 9:
                raise ValueError(reply)
            status, utime_us, stime_us, maxrss, cpu_ns, peak, oom, left = map(int, fields[1:])
        except ValueError:
            raise self._anomaly(f"sent {reply[:200]!r}") from None
        self.in_flight = False
        if left:  # its cgroups and network namespace hold what the run left: not another run
            self.is_broken = True
        return Exit(
            status=status,
            utime_us=utime_us,
            stime_us=stime_us,
            maxrss_kib=maxrss,
            cpu_ns=cpu_ns,
            memory_peak_bytes=peak,
            oom_killed=bool(oom),
            left_behind=bool(left),
        )

    def kill(self) -> None:
        """SIGKILL the spawner and wait for it: the runs it started die with it
        (--die-with-parent). Idempotent."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Close our end (EOF: the spawner kills any run and exits) and wait for it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _receive(self) -> bytes:
        if self._sock is None:
            raise self._anomaly("is gone")
        try:
            message = self._sock.recv(1 << 16)
        except OSError as exc:  # TimeoutError included
            raise self._anomaly(f"failed: {exc}") from exc
        if not message:
            raise self._anomaly("died")
        return message

    def _anomaly(self, what: str) -> SpawnerGone:
        self.is_broken = True
        return SpawnerGone(f"the spawner of slot {self.slot_index} {what}")


def encode_request(request: Request, *, kind: str = "run") -> bytes:
    """A run (or warm) request for the spawner: fields separated by NUL bytes (see the module
    docstring)."""

    def text(value: int | None) -> str:
        return "" if value is None else str(value)

    fields = [
        kind,
        text(request.uid),
        text(request.uid),  # gid = uid
        request.cwd or "",
        text(request.memory_bytes),
        text(request.pids_max),
        str(len(request.rlimits)),
        *(str(number) for limit in request.rlimits for number in limit),
        str(len(request.argv)),
        *request.argv,
        str(len(request.env)),
        *request.env,
    ]
    joined = "\0".join(fields)
    if joined.count("\0") != len(fields) - 1:
        raise RunnerError("cannot start the program: an argument contains a NUL byte")
    return joined.encode("utf-8", "surrogateescape")  # as os.fsencode


def memfd(name: str, data: bytes) -> int:
    """A close-on-exec memfd holding `data`, read from its start: a file to hand the spawner."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
