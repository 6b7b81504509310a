"""The sandbox: runs programs in isolation, ``slots`` at a time (the public ``Sandbox``).

It prepares the host once (the work root and /dev: host.py; the seccomp filter: seccomp.py;
the runtime and binary cache: cache.py; the spawner: spawner.py; the ttyinit of tty runs:
terminal.py), claims its slots (pool.py),
checks that bwrap works here, then lends a slot to each run (runner.py). Isolation itself lives
in the rooms it wires together: the bwrap command line (bwrap.py), each slot's uid, cgroups and
rlimits (slot.py), and the spawner that starts every process (spawner.py, spawner.c).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from runners import host, spawner, terminal, warm
from runners.bwrap import Bwrap
from runners.cache import BinaryCache, build_pch, prepare_runtime
from runners.control import Control
from runners.errors import RunnerError, SandboxUnavailable, ToolchainMissing
from runners.languages import CXX_FLAGS, resolve_language
from runners.limits import Limits
from runners.pool import SlotPool
from runners.program import Program
from runners.result import ExecutionStatus, Reason, Result, Stream
from runners.runner import OnCaseOutput, Workspace, run_program
from runners.seccomp import FILTER_VERSION as SECCOMP_VERSION, Scope as SeccompScope, build_filter
from runners.slot import SlotSetup
from runners.stage import Stage
from runners.warm import WarmConfig

logger = logging.getLogger(__name__)

MODES = ("bwrap", "none")


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How to sandbox: mode "bwrap" (default) or "none" (unsandboxed, on explicit request)."""

    mode: str = "bwrap"
    slots: int = 2
    work_root: str | None = None
    cache_bytes: int = 256 << 20
    warm: WarmConfig = WarmConfig()  # warm start of Python runs (warm.py)


class Sandbox:
    """Runs programs in isolation, ``slots`` at a time. Thread-safe; use as a context manager."""

    def __init__(self, config: SandboxConfig) -> None:
        if config.mode not in MODES:
            raise ValueError(f"sandbox mode must be one of {MODES}, got {config.mode!r}")
        if config.slots < 1:
            raise ValueError(f"sandbox slots must be at least 1, got {config.slots}")
        self.config = config
        is_root = os.geteuid() == 0
        executable = shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")
        if config.mode == "bwrap" and executable is None:
            raise SandboxUnavailable(
                "bwrap (bubblewrap) is not installed: install it, or ask for the unsandboxed "
                "mode explicitly (sandbox mode 'none')"
            )
        if config.mode == "none":
            logger.warning(
                "SANDBOX DISABLED (mode 'none'): untrusted programs run unsandboxed on this host"
            )
        self._bwrap_version = host.bwrap_version(executable) if executable else None
        self.work_root = host.private_directory(config.work_root or host.default_work_root(is_root))
        os.chmod(self.work_root, 0o711)  # slot uids traverse it to the runtime and cache
        self._runtime = os.path.join(self.work_root, "runtime")
        scratch = os.path.join(self.work_root, "scratch")
        os.makedirs(scratch, mode=0o711, exist_ok=True)
        prepare_runtime(self._runtime)
        seccomp = os.path.join(self.work_root, f"seccomp-{SECCOMP_VERSION}.bpf")
        self._has_seccomp = config.mode == "bwrap" and build_filter(seccomp)
        warm_seccomp = os.path.join(self.work_root, f"seccomp-warm-{SECCOMP_VERSION}.bpf")
        warm_run_seccomp = os.path.join(self.work_root, f"seccomp-warm-run-{SECCOMP_VERSION}.bpf")
        # warm start needs bwrap, the filter and root (a uid and cgroups of its own)
        warm_binary = (
            warm.build(self.work_root)
            if config.warm.enabled and self._has_seccomp and is_root
            else None
        )
        if warm_binary is not None:
            build_filter(warm_seccomp, SeccompScope.WARM)
            build_filter(warm_run_seccomp, SeccompScope.WARM_RUN)
        self.cache = BinaryCache(os.path.join(self.work_root, "cache"), config.cache_bytes)
        self._bwrap: Bwrap | None = None
        if config.mode == "bwrap":
            assert executable is not None
            self._bwrap = Bwrap(
                executable=executable,
                runtime_dir=self._runtime,
                dev_dir=host.prepare_dev() if is_root else None,
                etc_files=(
                    ("/etc/ld.so.cache", "/etc/ld.so.cache"),
                    (os.path.join(self._runtime, "passwd"), "/etc/passwd"),
                    (os.path.join(self._runtime, "group"), "/etc/group"),
                ),
                seccomp_file=seccomp if self._has_seccomp else None,
                warm_seccomp_files=(
                    (warm_seccomp, warm_run_seccomp) if warm_binary is not None else None
                ),
            )
        self._spawner = spawner.build(self.work_root)
        self._workspace = Workspace(
            cache=self.cache, scratch_dir=scratch, tty_init=terminal.build_init(self.work_root)
        )
        setup = SlotSetup(
            spawner=self._spawner,
            bwrap=self._bwrap,
            runtime_dir=self._runtime,
            scratch_dir=scratch,
            is_root=is_root,
            warm=warm_binary if self._bwrap is not None else None,
            warm_config=config.warm,
        )
        self._pool = SlotPool(config.slots, setup, self.work_root)
        try:
            if self._bwrap is not None:
                self._probe(self._bwrap)
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
        *,
        on_case_output: OnCaseOutput | None = None,
    ) -> Result:
        """Run a program to its end and return the Result; blocks while all slots are busy.

        on_output is called with each chunk as it is produced, from this thread (or, with test
        cases run side by side, from one of its helpers: never two calls at once); with test
        cases, each case's chunks go to on_case_output (case index, stream, text) when given,
        and the compiler's to on_output, in case order. Raises UnknownLanguage /
        ToolchainMissing for a bad language, RunnerError for our faults (and for a tty program
        with cases), ValueError for a terminal_size outside 1..1000 or without tty. Thread-safe.
        """
        language = resolve_language(program.language)
        if not language.available:
            raise ToolchainMissing(f"{language.name} is not installed here ({language.toolchain})")
        if self._pool.is_closed:
            raise RunnerError("the sandbox is closed")
        slot = self._pool.acquire(control)
        if slot is None:
            return Result.without_output(ExecutionStatus.CANCELLED, Reason.CANCELLED, "Cancelled")
        try:
            return run_program(
                slot,
                program,
                language,
                limits,
                workspace=self._workspace,
                on_output=on_output,
                on_case_output=on_case_output,
                control=control,
                lender=self._pool,
            )
        except RunnerError:
            raise
        except OSError as exc:
            raise RunnerError(f"sandbox failure: {exc}") from exc
        finally:
            self._pool.release(slot)

    def measures(self) -> dict[str, Any]:
        """Which isolation measures are active (for /health/sandbox)."""
        is_bwrap = self.config.mode == "bwrap"
        slots = self._pool.slots
        slot = slots[0] if slots else None
        cgroups = {c: bool(slot and c in slot.cgroups) for c in ("memory", "pids", "cpu")}
        rlimits = ["cpu", "fsize", "nofile", "nproc", "core", "as (python, c++)"]
        return {
            "mode": self.config.mode,
            "bwrap": self._bwrap_version,
            "namespaces": ["user", "pid", "net", "ipc", "uts", "mount"] if is_bwrap else [],
            "uid_per_slot": bool(slot and slot.uid is not None),
            "slot_uids": [s.uid for s in slots],
            # Python runs forked from a warm interpreter per slot, of its own uid (warm.py)
            "warm_python": bool(slot and slot.is_warm),
            "warm_uids": [s.warm_uid for s in slots if s.is_warm],
            "cgroup": cgroups,
            "cpuacct": bool(slot and "cpuacct" in slot.cgroups),
            "seccomp": self._has_seccomp,
            "rlimits": rlimits,
            "memory_limit": "memory cgroup" if cgroups["memory"] else "RLIMIT_AS only",
            "read_only_root": is_bwrap,
            # tty runs: a pseudo-terminal in a devpts instance of the run's own (terminal.py)
            "terminal": "devpts per run" if is_bwrap else "host devpts",
            "clean_environment": True,
            "network": "none" if is_bwrap else "host",
            "capabilities": "none" if is_bwrap else "inherited",
            "slots": len(slots),
            "precompiled_header": os.path.exists(_pch_file(self._runtime)),
        }

    def close(self) -> None:
        """Stop the spawners and the precompiled header's build, free the slots. Idempotent."""
        self._pool.close()
        if hasattr(self, "_pch"):
            self._pch_stop.set()
            self._pch.join(timeout=10)

    def _probe(self, bwrap: Bwrap) -> None:
        """Start a program in the sandbox once, so a broken bwrap fails here, clearly."""
        if bwrap.dev_dir is not None:
            # device nodes on the work root's filesystem: unusable when it is mounted nodev
            code, detail = self._probe_run(("/usr/bin/cat", "/dev/null"))
            if code != 0:
                logger.warning("prepared /dev unusable (%s); using bwrap --dev", detail)
                bwrap.dev_dir = None
        code, detail = self._probe_run(("/usr/bin/true",))
        if code != 0:
            raise SandboxUnavailable(f"bwrap does not work here: {detail}")
        if any(slot.is_warm for slot in self._pool.slots):
            try:
                code, detail = self._probe_run(("/usr/bin/python3",), warm=True)
            except RunnerError as exc:
                code, detail = None, str(exc)
            if code != 0:
                logger.warning("warm start of Python does not work here (%s); it is off", detail)
                for slot in self._pool.slots:
                    slot.disable_warm()

    def _probe_run(self, argv: tuple[str, ...], *, warm: bool = False) -> tuple[int | None, str]:
        slot = self._pool.acquire(None)
        assert slot is not None
        try:
            stage = Stage(
                argv=argv,
                source_name="probe",
                wall_timeout_s=10.0,
                memory_mb=64,
                max_processes=8,
                file_size_bytes=1 << 20,
                limit_address_space=True,
                source=b"pass\n" if warm else b"",
                warm=warm,
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
            self._pool.release(slot)

    def _build_pch(self) -> None:
        try:
            build_pch(self._runtime, CXX_FLAGS, self._pch_stop)
        except Exception:
            if self._pch_stop.is_set():
                return
            logger.exception("precompiled header build failed; C++ compiles without it")


def _pch_file(runtime: str) -> str:
    return os.path.join(runtime, "pch", "bits", "stdc++.h.gch")
