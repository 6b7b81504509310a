"""The sandbox: the only module that knows isolation.

Each Sandbox claims ``slots`` host-unique slot indexes (flock on lock files). Slot N runs as host
uid 61000+N (uid 65534 inside bwrap's user namespace), with its own memory, pids, cpu and
cpuacct cgroups when we are root on cgroup v1, and a long-lived spawner process that lives in
those cgroups (see spawner.c): runs inherit the cgroups without a per-run move. Each run is
``bwrap`` with new user/pid/ipc/uts/mount namespaces, in a network namespace with only lo (the
slot spawner's own when we are root, reused run after run; else a new one), read-only /usr,
size-capped tmpfs /tmp and /box, a read-only root, an empty environment, a seccomp deny-list
and rlimits.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import queue
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from runners import _cspawner
from runners.cache import BinaryCache, build_pch, prepare_runtime
from runners.control import Control
from runners.errors import RunnerError, SandboxUnavailable, ToolchainMissing
from runners.languages import CXX_FLAGS, resolve_language
from runners.limits import Limits
from runners.program import Program
from runners.result import ExecutionStatus, Reason, Result, Stream
from runners.runner import Workspace, run_program
from runners.seccomp import FILTER_VERSION as SECCOMP_VERSION, build_filter
from runners.stage import ExitReport, Stage

logger = logging.getLogger(__name__)

MODES = ("bwrap", "none")
SLOT_UID_BASE = 61000
_SLOT_LOCK_DIR = "/run/livecode-slots"
_MAX_SLOT_INDEX = 1000
_CGROUP_ROOT = "/sys/fs/cgroup"
_CGROUP_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
_CPU_PERIOD_US = 100_000  # quota = period: at most one core per run
_BOX = "/box"
_OUT = "/out"
_RUNTIME = "/opt/livecode"
_TMPFS_BYTES = 64 << 20
_SANDBOX_PROCESSES = 2  # bwrap and its pid 1 count against the run's process budget
_NOFILE = 256
# --unshare-all but the network: the slot's spawner already has a network namespace of its own
_UNSHARE_BUT_NET = ("--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try")
# fds of a bwrap start after stdin/stdout/stderr, in the order the slot sends them: the source
# (only when the stage has one), the files of /etc (Sandbox.etc_files), the seccomp filter, then
# bwrap's options (--args)
_FD_SOURCE = 3
_SANDBOX_ENV = ("PATH", "/usr/bin:/bin", "HOME", "/tmp", "LANG", "C.UTF-8")
# the longest wait for a reply of the spawner ("ready", "pid N"); beyond it the slot is reset
_REPLY_TIMEOUT_S = 30.0
_SWEEP_TIMEOUT_S = 10.0
# a longer request (long program arguments) goes through a memfd: a SOCK_SEQPACKET message is
# capped by the socket's send buffer (~200 KiB by default)
_INLINE_REQUEST_BYTES = 32 << 10


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How to sandbox: mode "bwrap" (default) or "none" (unsandboxed, on explicit request)."""

    mode: str = "bwrap"
    slots: int = 2
    work_root: str | None = None
    cache_bytes: int = 256 << 20


class Sandbox:
    """Runs programs in isolation, ``slots`` at a time. Thread-safe; use as a context manager."""

    def __init__(self, config: SandboxConfig) -> None:
        if config.mode not in MODES:
            raise ValueError(f"sandbox mode must be one of {MODES}, got {config.mode!r}")
        if config.slots < 1:
            raise ValueError(f"sandbox slots must be at least 1, got {config.slots}")
        self.config = config
        self._is_root = os.geteuid() == 0
        self._bwrap = shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")
        if config.mode == "bwrap" and self._bwrap is None:
            raise SandboxUnavailable(
                "bwrap (bubblewrap) is not installed: install it, or ask for the unsandboxed "
                "mode explicitly (sandbox mode 'none')"
            )
        if config.mode == "none":
            logger.warning(
                "SANDBOX DISABLED (mode 'none'): untrusted programs run unsandboxed on this host"
            )
        self._bwrap_version = _bwrap_version(self._bwrap) if self._bwrap else None
        self.work_root = _private_directory(config.work_root or _default_work_root(self._is_root))
        os.chmod(self.work_root, 0o711)  # slot uids traverse it to the runtime and cache
        self._runtime = os.path.join(self.work_root, "runtime")
        self._scratch = os.path.join(self.work_root, "scratch")
        os.makedirs(self._scratch, mode=0o711, exist_ok=True)
        prepare_runtime(self._runtime)
        # (host file, path in the sandbox), copied into each sandbox's /etc
        self.etc_files = (
            ("/etc/ld.so.cache", "/etc/ld.so.cache"),
            (os.path.join(self._runtime, "passwd"), "/etc/passwd"),
            (os.path.join(self._runtime, "group"), "/etc/group"),
        )
        self._seccomp = os.path.join(self.work_root, f"seccomp-{SECCOMP_VERSION}.bpf")
        self._has_seccomp = config.mode == "bwrap" and build_filter(self._seccomp)
        self.cache = BinaryCache(os.path.join(self.work_root, "cache"), config.cache_bytes)
        self._workspace = Workspace(cache=self.cache, scratch_dir=self._scratch)
        is_bwrap_root = self._is_root and config.mode == "bwrap"
        self._dev = _prepare_dev(self.work_root) if is_bwrap_root else None
        self._spawner = _cspawner.build(self.work_root)
        self._slots: list[_Slot] = []
        self._free: queue.Queue[_Slot] = queue.Queue()
        self._closed = False
        try:
            for index, lock in _claim_slot_indexes(config.slots, self._is_root, self.work_root):
                slot = _Slot(self, index, lock)
                self._slots.append(slot)
                self._free.put(slot)
            if config.mode == "bwrap":
                self._probe()
        except BaseException:
            self.close()
            raise
        # building the PCH takes seconds: in the background; compiles use it once it exists
        self._pch_stop = threading.Event()  # close() stops the build: no compiler left behind
        self._pch = threading.Thread(target=self._build_pch, name="runners-pch", daemon=True)
        self._pch.start()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def run(
        self,
        program: Program,
        limits: Limits,
        on_output: Callable[[Stream, str], None] | None = None,
        control: Control | None = None,
    ) -> Result:
        """Run a program to its end and return the Result; blocks while all slots are busy.

        on_output is called from this thread with each chunk as it is produced. Raises
        UnknownLanguage / ToolchainMissing for a bad language, RunnerError for our faults.
        Thread-safe.
        """
        language = resolve_language(program.language)
        if not language.available:
            raise ToolchainMissing(f"{language.name} is not installed here ({language.toolchain})")
        if self._closed:
            raise RunnerError("the sandbox is closed")
        slot = self._wait_for_slot(control)
        if slot is None:
            return _cancelled_result()
        try:
            return run_program(
                slot,
                program,
                language,
                limits,
                workspace=self._workspace,
                on_output=on_output,
                control=control,
            )
        except RunnerError:
            raise
        except OSError as exc:
            raise RunnerError(f"sandbox failure: {exc}") from exc
        finally:
            slot.settle()
            self._free.put(slot)

    def measures(self) -> dict[str, Any]:
        """Which isolation measures are active (for /health/sandbox)."""
        is_bwrap = self.config.mode == "bwrap"
        slot = self._slots[0] if self._slots else None
        cgroups = {c: bool(slot and c in slot.cgroups) for c in ("memory", "pids", "cpu")}
        rlimits = ["cpu", "fsize", "nofile", "nproc", "core", "as (python, c++)"]
        return {
            "mode": self.config.mode,
            "bwrap": self._bwrap_version,
            "namespaces": ["user", "pid", "net", "ipc", "uts", "mount"] if is_bwrap else [],
            "uid_per_slot": bool(slot and slot.uid is not None),
            "slot_uids": [s.uid for s in self._slots],
            "cgroup": cgroups,
            "cpuacct": bool(slot and "cpuacct" in slot.cgroups),
            "seccomp": self._has_seccomp,
            "rlimits": rlimits,
            "memory_limit": "memory cgroup" if cgroups["memory"] else "RLIMIT_AS only",
            "read_only_root": is_bwrap,
            "clean_environment": True,
            "network": "none" if is_bwrap else "host",
            "capabilities": "none" if is_bwrap else "inherited",
            "slots": len(self._slots),
            "precompiled_header": os.path.exists(_pch_file(self._runtime)),
        }

    def close(self) -> None:
        """Stop the spawners and the precompiled header's build, free the slots. Idempotent."""
        self._closed = True
        if hasattr(self, "_pch"):
            self._pch_stop.set()
            self._pch.join(timeout=10)
        for slot in self._slots:
            slot.close()
        self._slots.clear()

    def _wait_for_slot(self, control: Control | None) -> _Slot | None:
        while True:
            if control is not None and control.is_cancelled:
                return None
            try:
                return self._free.get(timeout=0.05 if control is not None else 1.0)
            except queue.Empty:
                if self._closed:
                    raise RunnerError("the sandbox is closed") from None

    def _probe(self) -> None:
        """Start a program in the sandbox once, so a broken bwrap fails here, clearly."""
        if self._dev is not None:
            # device nodes on the work root's filesystem: unusable when it is mounted nodev
            code, detail = self._probe_run(("/usr/bin/cat", "/dev/null"))
            if code != 0:
                logger.warning("prepared /dev unusable (%s); using bwrap --dev", detail)
                self._dev = None
        code, detail = self._probe_run(("/usr/bin/true",))
        if code != 0:
            raise SandboxUnavailable(f"bwrap does not work here: {detail}")

    def _probe_run(self, argv: tuple[str, ...]) -> tuple[int | None, str]:
        slot = self._free.get()
        try:
            stage = Stage(
                argv=argv,
                source_name="probe",
                wall_timeout_s=10.0,
                memory_mb=64,
                max_processes=8,
                file_size_bytes=1 << 20,
                limit_address_space=True,
            )
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            try:
                process = slot.start(stage, stdin_fd=null, stdout_fd=null, stderr_fd=err_w)
            except RunnerError as exc:
                raise SandboxUnavailable(f"bwrap does not work here: {exc}") from exc
            finally:
                os.close(null)
                os.close(err_w)
            report = process.wait()
            with os.fdopen(err_r, "rb") as err:
                detail = err.read().decode(errors="replace").strip()
            return report.exit_code, detail or str(report)
        finally:
            slot.settle()
            self._free.put(slot)

    def _build_pch(self) -> None:
        try:
            build_pch(self._runtime, CXX_FLAGS, self._pch_stop)
        except Exception:
            if self._pch_stop.is_set():
                return
            logger.exception("precompiled header build failed; C++ compiles without it")

    def stage_argv(self, slot: _Slot, stage: Stage) -> tuple[list[str], list[str] | None]:
        """Return (argv to exec, working directory or None) for a stage in this mode."""
        heap_mb = max(16, int(stage.memory_mb * 0.75))
        if self.config.mode == "none":
            return self._stage_argv_unsandboxed(slot, stage, heap_mb)
        names = {
            "source": f"{_BOX}/{stage.source_name}",
            "binary": f"{_OUT}/main" if stage.out_dir else f"{_BOX}/main",
            "runtime": _RUNTIME,
            "heap_cap": _heap_cap(slot, stage, heap_mb),
        }
        argv = [
            self._bwrap or "bwrap",
            *(_UNSHARE_BUT_NET if slot.private_network else ("--unshare-all",)),
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--cap-drop", "ALL",
            "--uid", "65534",
            "--gid", "65534",
            "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin",
            "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/sbin", "/sbin",
            # copied into the root tmpfs (read-only below) from fds: a bind mount costs more
            *(arg for fd, path in self._etc_fds(stage) for arg in ("--file", str(fd), path)),
            # the runtime (PCH, linebuf.o) only where the command uses it: the compile stage
            *self._runtime_args(stage),
            "--proc", "/proc",
            *self._dev_args(),
            "--size", str(_TMPFS_BYTES), "--tmpfs", "/tmp",
            "--size", str(_TMPFS_BYTES), "--tmpfs", _BOX,
        ]  # fmt: skip
        if stage.source:
            argv += ["--file", str(_FD_SOURCE), names["source"]]  # a memfd holding the source
        if stage.binary:
            argv += ["--ro-bind", stage.binary, names["binary"]]
        if stage.out_dir:
            argv += ["--bind", stage.out_dir, _OUT]
        argv += ["--chdir", _BOX, "--remount-ro", "/", "--clearenv"]
        for index in range(0, len(_SANDBOX_ENV), 2):
            argv += ["--setenv", _SANDBOX_ENV[index], _SANDBOX_ENV[index + 1]]
        if self._has_seccomp:
            argv += ["--seccomp", str(_fd_etc(stage) + len(self.etc_files))]  # the BPF filter
        argv += ["--", *_command(stage, names)]
        return argv, None

    def _dev_args(self) -> list[str]:
        if self._dev is None:
            return ["--dev", "/dev"]  # a tmpfs, 6 device binds, a devpts: ~0.5 ms more
        # bound as it is: a read-only remount would add nodev; it is root's, 0755, so unwritable
        return ["--dev-bind", self._dev, "/dev"]

    def _stage_argv_unsandboxed(
        self, slot: _Slot, stage: Stage, heap_mb: int
    ) -> tuple[list[str], list[str] | None]:
        run_dir = slot.unsandboxed_dir()
        names = {
            "source": f"{run_dir}/{stage.source_name}",
            "binary": f"{stage.out_dir}/main" if stage.out_dir else (stage.binary or ""),
            "runtime": self._runtime,
            "heap_cap": _heap_cap(slot, stage, heap_mb),
        }
        if stage.source:
            with open(names["source"], "wb") as out:
                out.write(stage.source)
        return _command(stage, names), [run_dir]

    def _etc_fds(self, stage: Stage) -> list[tuple[int, str]]:
        first = _fd_etc(stage)
        return [(first + index, path) for index, (_host, path) in enumerate(self.etc_files)]

    def _runtime_args(self, stage: Stage) -> tuple[str, ...]:
        if any("{runtime}" in part for part in stage.argv):
            return ("--ro-bind", self._runtime, _RUNTIME)
        return ("--dir", _RUNTIME)

    def seccomp_fd(self) -> int | None:
        """Open the seccomp filter for one bwrap start (bwrap reads it from the fd)."""
        if not self._has_seccomp:
            return None
        return os.open(self._seccomp, os.O_RDONLY | os.O_CLOEXEC)


class _SpawnerGone(RunnerError):
    """The spawner broke the protocol: died, went silent, or sent what it should not."""


class _Slot:
    """One run at a time: a host uid, cgroups, and a spawner process living in them.

    The spawner is trusted only while it keeps to the protocol: after any anomaly (a wrong or
    missing reply, a send or receive error, a run it did not end) the slot is reset before its
    next run: the spawner and everything in the slot's cgroups (or of its uid) are killed and a
    new spawner is started.
    """

    def __init__(self, sandbox: Sandbox, index: int, lock_fd: int) -> None:
        self.sandbox = sandbox
        self.index = index
        self.lock_fd = lock_fd
        self.uid: int | None = SLOT_UID_BASE + index if sandbox._is_root else None
        self.cgroups: dict[str, str] = _make_cgroups(index) if sandbox._is_root else {}
        self.spawner: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self._run_dir: str | None = None
        self.private_network = False
        self.broken = False  # the spawner broke the protocol: reset before the next run
        self.in_flight = False  # a run was requested and its exit report not yet read
        self._start_spawner()

    def _start_spawner(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cgroups = [f"{controller}={path}" for controller, path in self.cgroups.items()]
        try:
            self.spawner = subprocess.Popen(
                [self.sandbox._spawner, str(theirs.fileno()), *cgroups],
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
            self._kill_spawner()
            raise RunnerError(f"the spawner of slot {self.index} failed to start")
        # its runs use the spawner's own network namespace (only lo) instead of a new one each
        self.private_network = ready == b"ready netns"
        self.sock = ours

    def start(self, stage: Stage, *, stdin_fd: int, stdout_fd: int, stderr_fd: int) -> _Started:
        """Start a stage in this slot; the returned handle reports its end.

        A spawner found dead (EPIPE, EOF, no reply) is replaced and the start tried once more.
        """
        for attempt in range(2):
            if self.broken or self.spawner is None or self.spawner.poll() is not None:
                logger.warning("spawner of slot %d died or misbehaved; restarting it", self.index)
                self.reset()
            try:
                return self._start_once(stage, stdin_fd, stdout_fd, stderr_fd)
            except _SpawnerGone:
                self.broken = True
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, stage: Stage, stdin_fd: int, stdout_fd: int, stderr_fd: int) -> _Started:
        assert self.sock is not None
        argv, cwd = self.sandbox.stage_argv(self, stage)
        env = [] if self.sandbox.config.mode == "bwrap" else _unsandboxed_env(cwd)
        fds = [stdin_fd, stdout_fd, stderr_fd]
        extra: list[int] = []
        try:
            if self.sandbox.config.mode == "bwrap":
                if stage.source:  # else no fd: bwrap would hand an unused one to the program
                    source_fd = os.memfd_create("source", os.MFD_CLOEXEC)
                    extra.append(source_fd)
                    _write_all(source_fd, stage.source)
                    os.lseek(source_fd, 0, os.SEEK_SET)
                for host, _path in self.sandbox.etc_files:
                    extra.append(os.open(host, os.O_RDONLY | os.O_CLOEXEC))
                seccomp_fd = self.sandbox.seccomp_fd()
                if seccomp_fd is not None:
                    extra.append(seccomp_fd)
                # bwrap's options (host paths of the work root) from an fd: the sandbox's pid 1
                # is a fork of bwrap, and its /proc/1/cmdline would show them
                end = argv.index("--")
                options = argv[1:end]
                if any("\0" in option for option in options):
                    raise RunnerError("cannot start the program: a path contains a NUL byte")
                args_fd = os.memfd_create("args", os.MFD_CLOEXEC)
                extra.append(args_fd)
                # Encoded at once: ~75 options per run, one fsencode() each cost more.
                _write_all(args_fd, os.fsencode("".join(option + "\0" for option in options)))
                os.lseek(args_fd, 0, os.SEEK_SET)
                argv = [argv[0], "--args", str(len(fds) + len(extra) - 1), *argv[end:]]
            request = _encode_request(
                uid=self.uid,
                cwd=cwd[0] if cwd else None,
                memory_bytes=stage.memory_mb << 20 if "memory" in self.cgroups else None,
                pids_max=(
                    stage.max_processes + _SANDBOX_PROCESSES + 1 if "pids" in self.cgroups else None
                ),
                rlimits=_rlimits(stage, has_memcg="memory" in self.cgroups),
                argv=argv,
                env=env,
            )
            message = request
            if len(request) > _INLINE_REQUEST_BYTES:
                request_fd = os.memfd_create("request", os.MFD_CLOEXEC)
                extra.append(request_fd)  # the last fd: the spawner takes it off the list
                _write_all(request_fd, request)
                message = b"runfd"
            self.in_flight = True
            try:
                socket.send_fds(self.sock, [message], fds + extra)
            except OSError as exc:  # EPIPE: the spawner is dead
                raise _SpawnerGone(f"the spawner of slot {self.index} failed: {exc}") from exc
        finally:
            for fd in extra:
                os.close(fd)
        reply = self._receive()
        if reply.startswith(b"error "):
            self.in_flight = False
            raise RunnerError(f"cannot start the program: {reply[6:].decode(errors='replace')}")
        if not reply.startswith(b"pid "):
            raise self._anomaly(f"the spawner of slot {self.index} sent {reply[:200]!r}")
        return _Started(self)

    def _anomaly(self, message: str) -> _SpawnerGone:
        self.broken = True
        return _SpawnerGone(message)

    def _receive(self) -> bytes:
        if self.sock is None:
            raise self._anomaly(f"the spawner of slot {self.index} is gone")
        try:
            message = self.sock.recv(1 << 16)
        except OSError as exc:  # TimeoutError included
            raise self._anomaly(f"the spawner of slot {self.index} failed: {exc}") from exc
        if not message:
            raise self._anomaly(f"the spawner of slot {self.index} died")
        return message

    def finish(self, reply: bytes) -> ExitReport:
        """Turn the spawner's exit report (with the cgroup counters) into an ExitReport."""
        fields = reply.split()
        try:
            if fields[:1] != [b"exit"] or len(fields) != 8:
                raise ValueError(reply)
            status, utime_us, stime_us, maxrss, cpu_ns, peak, oom = map(int, fields[1:])
        except ValueError:
            raise self._anomaly(f"the spawner of slot {self.index} sent {reply[:200]!r}") from None
        self.in_flight = False
        exit_code: int | None = None
        signal_number: int | None = None
        if os.WIFSIGNALED(status):
            signal_number = os.WTERMSIG(status)
        else:
            code = os.WEXITSTATUS(status)
            if self.sandbox.config.mode == "bwrap" and 128 < code <= 128 + 64:
                # bwrap's pid 1 reports a program killed by signal N as exit 128+N
                signal_number = code - 128
            else:
                exit_code = code
        cpu_ms = (utime_us + stime_us) // 1000 if cpu_ns < 0 else cpu_ns // 1_000_000
        memory_kb: int | None = maxrss or None
        if peak >= 0:
            memory_kb = max(peak // 1024, memory_kb or 0)
        return ExitReport(
            exit_code=exit_code,
            signal=signal_number,
            cpu_time_ms=cpu_ms,
            memory_kb=memory_kb,
            oom_killed=bool(oom),
        )

    def unsandboxed_dir(self) -> str:
        """A fresh host run directory for mode "none", owned by the slot's uid."""
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
        self._run_dir = os.path.join(self.sandbox._scratch, f"run-{self.index}-{time.time_ns()}")
        os.mkdir(self._run_dir, 0o700)
        if self.uid is not None:
            os.chown(self._run_dir, self.uid, self.uid)
        return self._run_dir

    def cleanup_run(self) -> None:
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def settle(self) -> None:
        """After a run: reset the slot unless its spawner ended that run by the protocol."""
        if self.broken or self.in_flight:
            try:
                self.reset()
            except Exception:  # noqa: BLE001 - start() tries again before the next run
                logger.exception("cannot restart the spawner of slot %d", self.index)

    def reset(self) -> None:
        """Kill the spawner and everything of the slot, then start a new spawner."""
        self._kill_spawner()
        self._kill_everything()
        self.cleanup_run()
        self.broken = self.in_flight = False
        self._start_spawner()

    def _kill_spawner(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.spawner is not None:
            if self.spawner.poll() is None:
                self.spawner.kill()  # SIGKILL: the runs it started die with it (--die-with-parent)
            self.spawner.wait()
            self.spawner = None

    def _kill_everything(self) -> None:
        """SIGKILL every process left in the slot's cgroups, or else of its uid."""
        deadline = time.monotonic() + _SWEEP_TIMEOUT_S
        for directory in self.cgroups.values():
            try:
                while _kill_leftovers(directory) and time.monotonic() < deadline:
                    time.sleep(0.005)
            except OSError as exc:
                logger.warning("cannot sweep cgroup %s: %s", directory, exc)
        if not self.cgroups and self.uid is not None:
            _kill_uid(self.uid)

    def _stop_spawner(self) -> None:
        if self.sock is not None:
            self.sock.close()  # EOF: the spawner kills any run and exits
            self.sock = None
        if self.spawner is not None:
            try:
                self.spawner.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.spawner.kill()
                self.spawner.wait()
            self.spawner = None

    def close(self) -> None:
        self._stop_spawner()
        self.cleanup_run()
        for directory in self.cgroups.values():
            try:
                os.rmdir(directory)
            except OSError:
                pass
        os.close(self.lock_fd)


class _Started:
    """A stage running in a slot, as the pump sees it."""

    def __init__(self, slot: _Slot) -> None:
        self.slot = slot
        self._report: ExitReport | None = None

    def fileno(self) -> int:
        assert self.slot.sock is not None
        return self.slot.sock.fileno()

    def kill(self) -> None:
        if self._report is None and self.slot.sock is not None:
            try:
                self.slot.sock.send(b"kill")
            except OSError:
                self.slot.broken = True  # the pump sees EOF, or gives up after its grace time

    def read_report(self) -> ExitReport:
        try:
            self._report = self.slot.finish(self.slot._receive())
        finally:
            self.slot.cleanup_run()
        return self._report

    def wait(self) -> ExitReport:
        return self.read_report()


def _cancelled_result() -> Result:
    return Result.without_output(ExecutionStatus.CANCELLED, Reason.CANCELLED, "Cancelled")


def _fd_etc(stage: Stage) -> int:
    """The fd of the first /etc file in a bwrap start: after the source's, when it has one."""
    return _FD_SOURCE + 1 if stage.source else _FD_SOURCE


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _rlimits(stage: Stage, has_memcg: bool) -> list[tuple[int, int, int]]:
    cpu_s = math.ceil(stage.wall_timeout_s)
    limits = [
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_FSIZE, stage.file_size_bytes, stage.file_size_bytes),
        (resource.RLIMIT_NOFILE, _NOFILE, _NOFILE),
        (resource.RLIMIT_NPROC, stage.max_processes + _SANDBOX_PROCESSES, stage.max_processes + 2),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if stage.limit_address_space:
        # with a memory cgroup the cgroup is the limit, AS only turns huge allocations into a
        # clean MemoryError / bad_alloc; without one AS is all we have
        megabytes = max(stage.memory_mb * 4, 1024) if has_memcg else max(stage.memory_mb, 128)
        limits.append((resource.RLIMIT_AS, megabytes << 20, megabytes << 20))
    return limits


def _unsandboxed_env(cwd: list[str] | None) -> list[str]:
    home = cwd[0] if cwd else "/tmp"
    return ["PATH=/usr/bin:/bin", f"HOME={home}", "LANG=C.UTF-8"]


def _encode_request(
    uid: int | None,
    cwd: str | None,
    memory_bytes: int | None,
    pids_max: int | None,
    rlimits: list[tuple[int, int, int]],
    argv: list[str],
    env: list[str],
) -> bytes:
    """A run request for the spawner: fields separated by NUL bytes (see _cspawner.py)."""

    def text(value: int | None) -> str:
        return "" if value is None else str(value)

    fields = [
        "run",
        text(uid),
        text(uid),  # gid = uid
        cwd or "",
        text(memory_bytes),
        text(pids_max),
        str(len(rlimits)),
        *(str(number) for limit in rlimits for number in limit),
        str(len(argv)),
        *argv,
        str(len(env)),
        *env,
    ]
    joined = "\0".join(fields)
    if joined.count("\0") != len(fields) - 1:
        raise RunnerError("cannot start the program: an argument contains a NUL byte")
    return joined.encode("utf-8", "surrogateescape")  # as os.fsencode


_DEVICES = (("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9))
_DEV_LINKS = (
    ("shm", "/tmp"),  # POSIX shm and semaphores (multiprocessing) in the run's /tmp tmpfs
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)


def _default_work_root(is_root: bool) -> str:
    # Not under a world-writable directory such as /var/tmp: another local user could create
    # the directory first and plant the spawner we run as root, or the seccomp filter.
    if is_root:
        return "/var/lib/livecode-runners"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    if not os.path.isabs(cache):  # no home: the temporary directory, checked like any other
        cache = os.path.join(tempfile.gettempdir(), f"livecode-{os.geteuid()}")
    return os.path.join(cache, "livecode-runners")


def _private_directory(path: str) -> str:
    """Create `path`; return its real path (symlinks resolved once, here, so nobody can
    re-point one later) when nobody but us (and root) could have put anything in it: the
    spawner, seccomp filter, runtime and binary cache found there are trusted."""
    real = os.path.realpath(path)
    try:
        os.makedirs(real, mode=0o711, exist_ok=True)
    except FileExistsError:
        pass  # not a directory: said just below
    euid = os.geteuid()
    info = os.lstat(real)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise SandboxUnavailable(f"the sandbox work root {path} is not a directory")
    if info.st_uid != euid or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SandboxUnavailable(
            f"the sandbox work root {path} must belong to uid {euid} and be writable by it "
            f"alone (it belongs to uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o})"
        )
    # Whoever may rename an ancestor may swap the whole tree: each must be ours or root's,
    # and writable by others only with the sticky bit (as /tmp is).
    ancestor = os.path.dirname(real)
    while True:
        info = os.lstat(ancestor)
        shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX
        if info.st_uid not in (euid, 0) or shared:
            raise SandboxUnavailable(
                f"the sandbox work root {path} lies in {ancestor}, which others may change"
            )
        parent = os.path.dirname(ancestor)
        if parent == ancestor:
            return real
        ancestor = parent


def _prepare_dev(work_root: str) -> str | None:
    """A root-owned directory to bind as the sandbox's /dev: one bind instead of bwrap --dev.

    It holds the memory devices (null, zero, full, random, urandom, mode 0666 as on the host),
    the fd/stdin/stdout/stderr links and shm -> /tmp; no tty, no pts. Needs root (mknod); None
    otherwise.
    """
    directory = os.path.join(work_root, "dev-2")  # a new layout gets a new name
    if _is_prepared_dev(directory):
        return directory
    temporary = tempfile.mkdtemp(dir=work_root, prefix=".dev-")
    try:
        os.chmod(temporary, 0o755)
        for name, minor in _DEVICES:
            path = os.path.join(temporary, name)
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
            os.chmod(path, 0o666)  # mknod obeys the umask
        for name, target in _DEV_LINKS:
            os.symlink(target, os.path.join(temporary, name))
        try:
            os.rename(temporary, directory)
        except OSError:
            if not _is_prepared_dev(directory):  # not another process winning the race
                raise
    except OSError as exc:
        logger.warning("cannot prepare /dev for the sandbox (%s); using bwrap --dev", exc)
        return None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return directory


def _is_prepared_dev(directory: str) -> bool:
    try:
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            return False
        for name, minor in _DEVICES:
            node = os.lstat(os.path.join(directory, name))
            if not stat.S_ISCHR(node.st_mode) or node.st_rdev != os.makedev(1, minor):
                return False
            if node.st_uid != 0 or stat.S_IMODE(node.st_mode) != 0o666:
                return False
        return all(
            os.readlink(os.path.join(directory, name)) == target for name, target in _DEV_LINKS
        )
    except OSError:
        return False


def _claim_slot_indexes(count: int, is_root: bool, work_root: str) -> list[tuple[int, int]]:
    """Lock the first ``count`` free slot indexes on this host (flock; freed when we exit)."""
    directory = _SLOT_LOCK_DIR if is_root else os.path.join(work_root, "slots")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    claimed: list[tuple[int, int]] = []
    for index in range(_MAX_SLOT_INDEX):
        fd = os.open(
            os.path.join(directory, f"slot-{index}.lock"),
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
            0o644,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                continue
            raise
        claimed.append((index, fd))
        if len(claimed) == count:
            return claimed
    for _index, fd in claimed:
        os.close(fd)
    raise RunnerError(f"no free sandbox slot on this host (all {_MAX_SLOT_INDEX} in use)")


def _make_cgroups(index: int) -> dict[str, str]:
    """Create (or reuse) the slot's cgroups where cgroup v1 is writable; {} otherwise."""
    made: dict[str, str] = {}
    for controller in _CGROUP_CONTROLLERS:
        base = os.path.join(_CGROUP_ROOT, controller)
        if not os.path.exists(os.path.join(base, "cgroup.procs")):
            continue
        directory = os.path.join(base, "livecode", f"slot{index}")
        try:
            os.makedirs(directory, exist_ok=True)
            _kill_leftovers(directory)  # a crashed previous owner of this slot
            if controller == "cpu":
                _write(directory, "cpu.cfs_period_us", _CPU_PERIOD_US)
                _write(directory, "cpu.cfs_quota_us", _CPU_PERIOD_US)
            if controller == "memory":
                try:
                    _write(directory, "memory.swappiness", 0)
                except OSError:
                    pass
        except OSError as exc:
            logger.warning("cgroup %s unavailable for slot %d: %s", controller, index, exc)
            continue
        made[controller] = directory
    return made


def _kill_leftovers(directory: str) -> bool:
    """SIGKILL every process of the cgroup; False when it had none."""
    found = False
    with open(os.path.join(directory, "cgroup.procs")) as procs:
        for line in procs:
            try:
                os.kill(int(line), signal.SIGKILL)
                found = True
            except (ProcessLookupError, ValueError):
                pass
    return found


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of a slot uid: kill(-1) as that uid reaches those and no other."""
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    try:
        subprocess.run(
            [python, "-I", "-S", "-c", "import os, signal; os.kill(-1, signal.SIGKILL)"],
            user=uid,
            group=uid,
            extra_groups=[],
            env={"PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_SWEEP_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("cannot sweep the processes of uid %d: %s", uid, exc)


def _write(directory: str, name: str, value: int) -> None:
    with open(os.path.join(directory, name), "w") as file:
        file.write(str(value))


def _bwrap_version(bwrap: str) -> str | None:
    try:
        done = subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, env={}, timeout=10, check=False
        )
    except OSError:
        return None
    return done.stdout.strip().removeprefix("bubblewrap ") or None


def _pch_file(runtime: str) -> str:
    return os.path.join(runtime, "pch", "bits", "stdc++.h.gch")


def _heap_cap(slot: _Slot, stage: Stage, heap_mb: int) -> str:
    # With a memory cgroup the kernel enforces the limit; a runtime flag would only slow starts.
    return "" if "memory" in slot.cgroups else stage.heap_cap.format(heap_mb=heap_mb)


def _command(stage: Stage, names: dict[str, str]) -> list[str]:
    """The stage's argv with its templates filled in, then the program's own arguments verbatim."""
    command = [part.format(**names) for part in stage.argv]
    return [part for part in command if part] + list(stage.args)
