"""A slot: one run at a time, as its own host uid, in its own cgroups, through its own spawner.

Slot N runs as host uid 61000+N (uid 65534 inside bwrap's user namespace), with its own memory,
pids, cpu and cpuacct cgroups when we are root on cgroup v1, and a long-lived spawner living in
those cgroups: runs inherit them without a per-run move. Starting a stage here means asking the
spawner for its command line (bwrap.py) as the slot's uid, within the stage's cgroup limits and
rlimits. With warm start, a Python stage is forked instead from the slot's warm interpreter, in
a warm spawner with a uid and cgroups of its own (warm.py).
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass

from runners import host
from runners.bwrap import Bwrap, Launch, launch_unsandboxed
from runners.limits import cpu_limit_s
from runners.spawner import Exit, Request, Spawner, SpawnerGone, memfd
from runners.stage import ExitReport, Stage
from runners.warm import (
    RUN_INIT_PROCESSES,
    WARM_PROCESSES,
    WARM_UID_BASE,
    WarmBinaries,
    WarmConfig,
    encode_request as encode_warm_request,
    interpreter_rlimits,
)

logger = logging.getLogger(__name__)

_SANDBOX_PROCESSES = 2  # bwrap and its pid 1 count against the run's process budget
_NOFILE = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotSetup:
    """What every slot of a sandbox shares."""

    spawner: str  # the compiled spawner
    bwrap: Bwrap | None  # None in mode "none": stages start unsandboxed
    runtime_dir: str  # mode "none": seen at {runtime}
    scratch_dir: str  # mode "none": each start gets a run directory here
    is_root: bool  # then each slot has a uid and cgroups of its own
    warm: WarmBinaries | None = None  # the compiled warm interpreter; None: Python starts cold
    warm_config: WarmConfig = WarmConfig()


class Slot:
    """One run at a time: a host uid, cgroups, and a spawner process living in them.

    The spawner is trusted only while it keeps to the protocol: after any anomaly (a wrong or
    missing reply, a send or receive error, a run it did not end) the slot is reset before its
    next run: the spawner and everything in the slot's cgroups (or of its uid) are killed and a
    new spawner is started.
    """

    def __init__(self, index: int, lock_fd: int, setup: SlotSetup) -> None:
        """Start the slot's spawner. Takes `lock_fd` (closed by close(), or here when the
        spawner cannot start)."""
        self.index = index
        self.lock_fd = lock_fd
        self._setup = setup
        self.uid: int | None = host.SLOT_UID_BASE + index if setup.is_root else None
        self.cgroups: dict[str, str] = host.make_cgroups(index) if setup.is_root else {}
        self.spawner: Spawner | None = None
        self._run_dir: str | None = None
        # warm start needs bwrap, and root: a uid and cgroups apart from the cold runs'
        self.is_warm = setup.warm is not None and setup.bwrap is not None and setup.is_root
        self.warm_uid: int | None = WARM_UID_BASE + index if self.is_warm else None
        self.warm_cgroups: dict[str, str] = {}
        self.warm_spawner: Spawner | None = None
        self._warm_runs = 0
        self._warm_started_at = 0.0
        try:
            self._start_spawner()
        except BaseException:
            self.close()  # its lock fd and cgroups are the slot's from the start: freed here
            raise

    def start(self, stage: Stage, *, stdin_fd: int, stdout_fd: int, stderr_fd: int) -> _Running:
        """Start a stage in this slot; the returned handle reports its end.

        A spawner found dead (EPIPE, EOF, no reply) is replaced and the start tried once more.
        """
        if stage.warm and self.is_warm:
            return self._start_warm(stage, (stdin_fd, stdout_fd, stderr_fd))
        for attempt in range(2):
            if self.spawner is None or self.spawner.is_broken or not self.spawner.is_alive():
                logger.warning("spawner of slot %d died or misbehaved; restarting it", self.index)
                self.reset()
            try:
                return self._start_once(stage, (stdin_fd, stdout_fd, stderr_fd))
            except SpawnerGone:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def settle(self) -> None:
        """After a run: reset the slot unless its spawner ended that run by the protocol."""
        if self.spawner is not None and (self.spawner.is_broken or self.spawner.in_flight):
            try:
                self.reset()
            except Exception:  # noqa: BLE001 - start() tries again before the next run
                logger.exception("cannot restart the spawner of slot %d", self.index)
        warm = self.warm_spawner
        if warm is not None and (warm.is_broken or warm.in_flight or not warm.is_alive()):
            self.reset_warm()  # the next Python run starts a new interpreter

    def reset_warm(self) -> None:
        """Kill the warm interpreter, its spawner and everything of its cgroups."""
        if self.warm_spawner is not None:
            self.warm_spawner.kill()
            self.warm_spawner = None
        self._sweep(self.warm_cgroups, self.warm_uid)
        host.renew_if_charged(self.warm_cgroups)

    def disable_warm(self) -> None:
        """Python runs start cold from now on (the warm interpreter failed its probe)."""
        self.reset_warm()
        self.is_warm = False

    def reset(self) -> None:
        """Kill the spawner and everything of the slot, then start a new spawner."""
        if self.spawner is not None:
            self.spawner.kill()
            self.spawner = None
        self._sweep(self.cgroups, self.uid)
        host.renew_if_charged(self.cgroups)
        self.cleanup_run()
        self._start_spawner()

    def cleanup_run(self) -> None:
        """Remove the run directory of mode "none", if any."""
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def close(self) -> None:
        """Stop the spawner, free the slot's cgroups and its index."""
        if self.spawner is not None:
            self.spawner.stop()
            self.spawner = None
        if self.warm_spawner is not None:
            self.warm_spawner.stop()
            self.warm_spawner = None
            self._sweep(self.warm_cgroups, self.warm_uid)
        self.cleanup_run()
        for directory in (*self.cgroups.values(), *self.warm_cgroups.values()):
            try:
                os.rmdir(directory)
            except OSError:
                pass
        os.close(self.lock_fd)

    def _start_spawner(self) -> None:
        self.spawner = Spawner(
            self._setup.spawner,
            self.cgroups,
            self.index,
            is_sandboxed=self._setup.bwrap is not None,
        )

    def _start_once(self, stage: Stage, stdio: tuple[int, int, int]) -> _Running:
        spawner = self.spawner
        assert spawner is not None
        launch = self._launch(spawner, stage)
        try:
            has_memcg = "memory" in self.cgroups
            request = Request(
                uid=self.uid,
                cwd=launch.cwd,
                memory_bytes=stage.memory_mb << 20 if has_memcg else None,
                pids_max=(
                    stage.max_processes + _SANDBOX_PROCESSES + 1 if "pids" in self.cgroups else None
                ),
                rlimits=_rlimits(stage, has_memcg=has_memcg, copied_bytes=launch.copied_bytes),
                argv=launch.argv,
                env=launch.env,
            )
            spawner.start_run(request, [*stdio, *launch.fds])
        finally:
            for fd in launch.fds:
                os.close(fd)
        return _Running(self, spawner, is_bwrap=self._setup.bwrap is not None)

    def _launch(self, spawner: Spawner, stage: Stage) -> Launch:
        has_memory_cgroup = "memory" in self.cgroups
        if self._setup.bwrap is not None:
            return self._setup.bwrap.launch(
                stage,
                has_private_network=spawner.has_private_network,
                has_memory_cgroup=has_memory_cgroup,
            )
        return launch_unsandboxed(
            stage,
            run_dir=self._new_run_dir(),
            runtime_dir=self._setup.runtime_dir,
            has_memory_cgroup=has_memory_cgroup,
        )

    def _new_run_dir(self) -> str:
        """A fresh host run directory for mode "none", owned by the slot's uid."""
        self.cleanup_run()
        self._run_dir = os.path.join(self._setup.scratch_dir, f"run-{self.index}-{time.time_ns()}")
        os.mkdir(self._run_dir, 0o700)
        if self.uid is not None:
            os.chown(self._run_dir, self.uid, self.uid)
        return self._run_dir

    def _start_warm(self, stage: Stage, stdio: tuple[int, int, int]) -> _Running:
        """Fork a Python stage from the warm interpreter, started (or replaced: dead, broken,
        or due for recycling) first. A spawner found gone is replaced and the start tried once
        more, as start() does."""
        for attempt in range(2):
            spawner = self._warm_interpreter()
            try:
                return self._start_warm_once(spawner, stage, stdio)
            except SpawnerGone:
                self.reset_warm()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _warm_interpreter(self) -> Spawner:
        config = self._setup.warm_config
        spawner = self.warm_spawner
        if spawner is not None and (
            spawner.is_broken
            or not spawner.is_alive()
            or self._warm_runs >= config.max_runs
            or time.monotonic() - self._warm_started_at >= config.max_age_s
        ):
            self.reset_warm()
        if self.warm_spawner is None:
            self.warm_spawner = self._new_warm_interpreter()
            self._warm_runs = 0
            self._warm_started_at = time.monotonic()
        return self.warm_spawner

    def _new_warm_interpreter(self) -> Spawner:
        bwrap, binaries = self._setup.bwrap, self._setup.warm
        assert bwrap is not None and binaries is not None
        if not self.warm_cgroups:
            self.warm_cgroups = host.make_cgroups(self.index, "warm")
        spawner = Spawner(self._setup.spawner, self.warm_cgroups, self.index, is_sandboxed=True)
        try:
            launch = bwrap.launch_warm(binaries, has_private_network=spawner.has_private_network)
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            try:
                request = Request(
                    uid=self.warm_uid,
                    cwd=launch.cwd,
                    memory_bytes=None,
                    pids_max=None,
                    rlimits=interpreter_rlimits(),
                    argv=launch.argv,
                    env=launch.env,
                )
                spawner.start_warm(request, [null, null, null, *launch.fds])
            finally:
                os.close(null)
                for fd in launch.fds:
                    os.close(fd)
        except BaseException:
            spawner.kill()
            raise
        return spawner

    def _start_warm_once(
        self, spawner: Spawner, stage: Stage, stdio: tuple[int, int, int]
    ) -> _Running:
        has_memcg = "memory" in self.warm_cgroups
        request = encode_warm_request(
            _rlimits(stage, has_memcg=has_memcg, is_warm=True), stage.args
        )
        fds = [memfd("source", stage.source)]
        try:
            fds.append(memfd("request", request))
            spawner.start_warm_run(
                stage.memory_mb << 20 if has_memcg else None,
                # the spawner, the interpreter's processes and the run's pid 1 count too
                (
                    stage.max_processes + WARM_PROCESSES + RUN_INIT_PROCESSES + 1
                    if "pids" in self.warm_cgroups
                    else None
                ),
                [*stdio, *fds],
            )
        finally:
            for fd in fds:
                os.close(fd)
        self._warm_runs += 1
        return _Running(self, spawner, is_bwrap=True)

    def _sweep(self, cgroups: dict[str, str], uid: int | None) -> None:
        """SIGKILL every process left in `cgroups`, or else of `uid`."""
        deadline = time.monotonic() + host.SWEEP_TIMEOUT_S
        for directory in cgroups.values():
            try:
                while host.kill_leftovers(directory) and time.monotonic() < deadline:
                    time.sleep(0.005)
            except OSError as exc:
                logger.warning("cannot sweep cgroup %s: %s", directory, exc)
        if not cgroups and uid is not None:
            host.kill_uid(uid)


class _Running:
    """A stage running in a slot, as the pump sees it."""

    def __init__(self, slot: Slot, spawner: Spawner, *, is_bwrap: bool) -> None:
        self._slot = slot
        self._spawner = spawner
        self._is_bwrap = is_bwrap
        self._report: ExitReport | None = None

    def fileno(self) -> int:
        return self._spawner.fileno()

    def kill(self) -> None:
        if self._report is None:
            self._spawner.kill_run()

    def read_report(self) -> ExitReport:
        try:
            ended = self._spawner.read_exit()
        finally:
            self._slot.cleanup_run()
        if ended.left_behind:
            logger.warning(
                "slot %d: what a run left in flight was not freed in time; resetting the slot",
                self._slot.index,
            )
        self._report = _exit_report(ended, is_bwrap=self._is_bwrap)
        return self._report

    def wait(self) -> ExitReport:
        return self.read_report()


def _rlimits(
    stage: Stage, *, has_memcg: bool, copied_bytes: int = 0, is_warm: bool = False
) -> Sequence[tuple[int, int, int]]:
    cpu_s = cpu_limit_s(stage.wall_timeout_s)
    # bwrap copies the executables in under this limit too (a 20 MB binary would not fit);
    # the program's files stay capped by its tmpfs sizes as well
    file_bytes = max(stage.file_size_bytes, copied_bytes)
    # a warm run's user namespace counts its processes apart: its pid 1 and the program's
    nproc = stage.max_processes + (RUN_INIT_PROCESSES if is_warm else _SANDBOX_PROCESSES)
    limits = [
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_FSIZE, file_bytes, file_bytes),
        (resource.RLIMIT_NOFILE, _NOFILE, _NOFILE),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if stage.limit_address_space:
        # with a memory cgroup the cgroup is the limit, AS only turns huge allocations into a
        # clean MemoryError / bad_alloc; without one AS is all we have
        megabytes = max(stage.memory_mb * 4, 1024) if has_memcg else max(stage.memory_mb, 128)
        limits.append((resource.RLIMIT_AS, megabytes << 20, megabytes << 20))
    return limits


def _exit_report(ended: Exit, *, is_bwrap: bool) -> ExitReport:
    """What the spawner's exit report means for the stage."""
    exit_code: int | None = None
    signal_number: int | None = None
    if os.WIFSIGNALED(ended.status):
        signal_number = os.WTERMSIG(ended.status)
    else:
        code = os.WEXITSTATUS(ended.status)
        if is_bwrap and 128 < code <= 128 + 64:
            # bwrap's pid 1 reports a program killed by signal N as exit 128+N
            signal_number = code - 128
        else:
            exit_code = code
    if ended.cpu_ns < 0:
        cpu_ms = (ended.utime_us + ended.stime_us) // 1000
    else:
        cpu_ms = ended.cpu_ns // 1_000_000
    memory_kb: int | None = ended.maxrss_kib or None
    if ended.memory_peak_bytes >= 0:
        memory_kb = max(ended.memory_peak_bytes // 1024, memory_kb or 0)
    return ExitReport(
        exit_code=exit_code,
        signal=signal_number,
        cpu_time_ms=cpu_ms,
        memory_kb=memory_kb,
        oom_killed=ended.oom_killed,
    )
