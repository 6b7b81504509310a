"""The command line a stage starts with: bwrap's, or the bare one of mode "none".

A sandboxed start is ``bwrap`` with new user/pid/ipc/uts/mount namespaces, in a network
namespace with only lo (the slot spawner's own when it has one, else a new one), no
capabilities, uid 65534, read-only /usr, size-capped tmpfs /tmp and /box, a read-only root, an
empty environment and the seccomp filter. bwrap reads the source and the files of /etc it copies
in, the filter, the executables it copies in (a C++ binary, ttyinit) and its own options from
fds the spawner hands it after stdin/stdout/stderr.
A tty stage gets bwrap's own /dev (--dev), whose /dev/pts is a devpts instance of the run's own,
and ttyinit in front of its command (terminal.py).

What a program sees of its mounts (/proc/self/mountinfo) names no host path of ours: a bind
shows its source's path on the source's filesystem, so the run stage binds only /usr and the
prepared /dev (host.prepare_dev keeps it in the host's /dev, a devtmpfs, where it is
``/.livecode-dev-2``), and executables are copied in rather than bound from the work root.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from runners.errors import RunnerError
from runners.spawner import memfd
from runners.stage import Stage
from runners.warm import WarmBinaries

_BOX = "/box"
_OUT = "/out"
_BINARY = f"{_BOX}/main"  # where an execution stage finds its compiled program
_RUNTIME = "/opt/livecode"
_TTY_INIT = "/opt/livecode-tty"
_WARM = "/opt/livecode-warm"
_WARM_INIT = "/opt/livecode-init"  # warm.c's INIT_PATH
_TMPFS_BYTES = 64 << 20
# --unshare-all but the network: the slot's spawner already has a network namespace of its own
_UNSHARE_BUT_NET = ("--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try")
# fds of a bwrap start after stdin/stdout/stderr (from 3 on), in the order Bwrap.launch opens
# them: the source (only when the stage has one), the files of /etc, the seccomp filter, the
# executables copied in (_copied), then bwrap's options (--args)
_FD_FIRST = 3
_SANDBOX_ENV = ("PATH", "/usr/bin:/bin", "HOME", "/tmp", "LANG", "C.UTF-8")
# a tty run's terminal is drawn by xterm.js (the playground) or a real terminal: colours work
TERM = "xterm-256color"


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """What the spawner is asked to start: argv, working directory, environment, and the fds
    it hands over after stdin/stdout/stderr (the caller's to close once sent)."""

    argv: tuple[str, ...]
    cwd: str | None = None
    env: tuple[str, ...] = ()
    fds: tuple[int, ...] = ()
    # bwrap writes the executables it copies in under the stage's RLIMIT_FSIZE: the limit must
    # be at least the largest (a C++ binary may be up to the compile stage's limit)
    copied_bytes: int = 0


class Bwrap:
    """Builds the bwrap start of a stage from what every sandbox of this host shares."""

    def __init__(
        self,
        *,
        executable: str,
        runtime_dir: str,
        dev_dir: str | None,
        etc_files: Sequence[tuple[str, str]],
        seccomp_file: str | None,
        warm_seccomp_files: tuple[str, str] | None = None,
    ) -> None:
        self.executable = executable
        self.runtime_dir = runtime_dir
        # bound as the sandbox's /dev; None: bwrap --dev (the sandbox's probe may give it up)
        self.dev_dir = dev_dir
        self.etc_files = tuple(etc_files)  # (host file, path in the sandbox), copied into /etc
        self.seccomp_file = seccomp_file  # None: no filter (no libseccomp here)
        # the warm interpreter's filter and the one each of its runs stacks on it (seccomp.py)
        self.warm_seccomp_files = warm_seccomp_files

    def launch(
        self,
        stage: Stage,
        *,
        has_private_network: bool,
        has_memory_cgroup: bool,
        warm: WarmBinaries | None = None,
    ) -> Launch:
        """Open the fds of one bwrap start and return it; its options travel in an fd.

        With `warm`, the start of a warm interpreter (launch_warm)."""
        argv = self._argv(stage, has_private_network, has_memory_cgroup, warm)
        seccomp_file = self.seccomp_file
        if warm is not None:
            assert self.warm_seccomp_files is not None, "launch_warm checks it"
            seccomp_file = self.warm_seccomp_files[0]
        fds: list[int] = []
        try:
            if stage.source:  # else no fd: bwrap would hand an unused one to the program
                fds.append(memfd("source", stage.source))
            for host, _path in self.etc_files:
                fds.append(os.open(host, os.O_RDONLY | os.O_CLOEXEC))
            if seccomp_file is not None:
                fds.append(os.open(seccomp_file, os.O_RDONLY | os.O_CLOEXEC))
            copied_bytes = 0
            for host, _path in _copied(stage, warm):
                fds.append(os.open(host, os.O_RDONLY | os.O_CLOEXEC))
                copied_bytes = max(copied_bytes, os.fstat(fds[-1]).st_size)
            # bwrap's options (host paths of the work root) from an fd: the sandbox's pid 1 is a
            # fork of bwrap, and its /proc/1/cmdline would show them
            end = argv.index("--")
            options = argv[1:end]
            if any("\0" in option for option in options):
                raise RunnerError("cannot start the program: a path contains a NUL byte")
            # Encoded at once: ~75 options per run, one fsencode() each cost more.
            fds.append(memfd("args", os.fsencode("".join(option + "\0" for option in options))))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        args_fd = _FD_FIRST + len(fds) - 1
        return Launch(
            argv=(argv[0], "--args", str(args_fd), *argv[end:]),
            fds=tuple(fds),
            copied_bytes=copied_bytes,
        )

    def launch_warm(self, warm: WarmBinaries, *, has_private_network: bool) -> Launch:
        """The start of a slot's warm interpreter (warm.c): a cold run's sandbox but for two
        things that let it give each run namespaces of its own: no --disable-userns, and the
        warm filter, which allows unshare and mount (each run stacks on it the rest of the cold
        runs' filter). Its fds after the launch's: the filter its runs stack, then the
        spawner's socket."""
        if self.seccomp_file is None or self.warm_seccomp_files is None:
            raise RunnerError("warm start needs the seccomp filter")
        # the etc files, the warm filter, the interpreter and init (copied in), bwrap's options
        count = len(self.etc_files) + 4
        filter_fd = _FD_FIRST + count
        stage = Stage(
            argv=(_WARM, str(filter_fd + 1), str(filter_fd)),
            source_name="main.py",
            wall_timeout_s=0.0,
            memory_mb=0,
            max_processes=0,
            file_size_bytes=0,
            limit_address_space=False,
        )
        launch = self.launch(
            stage,
            has_private_network=has_private_network,
            has_memory_cgroup=True,
            warm=warm,
        )
        assert len(launch.fds) == count
        try:
            strict = os.open(self.warm_seccomp_files[1], os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            for fd in launch.fds:
                os.close(fd)
            raise
        return Launch(argv=launch.argv, fds=(*launch.fds, strict), copied_bytes=launch.copied_bytes)

    def _argv(
        self,
        stage: Stage,
        has_private_network: bool,
        has_memory_cgroup: bool,
        warm: WarmBinaries | None = None,
    ) -> list[str]:
        names = {
            "source": f"{_BOX}/{stage.source_name}",
            "binary": f"{_OUT}/main" if stage.out_dir else _BINARY,
            "runtime": _RUNTIME,
            "heap_cap": _heap_cap(stage, has_memory_cgroup),
        }
        fd_etc = _FD_FIRST + 1 if stage.source else _FD_FIRST  # after the source's, if any
        fd_seccomp = fd_etc + len(self.etc_files)
        fd_copied = fd_seccomp + (1 if self.seccomp_file is not None else 0)
        argv = [
            self.executable,
            *(_UNSHARE_BUT_NET if has_private_network else ("--unshare-all",)),
            "--unshare-user",
            # the warm interpreter makes a user namespace for each run; its runs cannot
            *(() if warm else ("--disable-userns",)),
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
            *(
                arg
                for index, (_host, path) in enumerate(self.etc_files)
                for arg in ("--file", str(fd_etc + index), path)
            ),
            # the runtime (PCH, linebuf.o) only where the command uses it: the compile stage
            *self._runtime_args(stage),
            "--proc", "/proc",
            *self._dev_args(stage),
            *self._scratch_args(warm),
        ]  # fmt: skip
        if stage.source:
            argv += ["--file", str(_FD_FIRST), names["source"]]  # a memfd holding the source
        # Copied (bwrap writes them into its own tmpfs and binds that file read-only) rather
        # than bound: a bind of the work root's file would show its host path in mountinfo.
        # The copy costs about 1 ms a MB: +0.4 ms a start for a 16 KB hello, +4.2 for a 4 MB
        # binary (bench/ab_runners.py against the bind, side by side; python starts unchanged).
        for index, (_host, path) in enumerate(_copied(stage, warm)):
            argv += ["--perms", "0555", "--ro-bind-data", str(fd_copied + index), path]
        if stage.out_dir:
            # The compile stage's output directory: its host path shows in that stage's
            # mountinfo, which only g++, as and ld run in (they read /proc files as empty).
            argv += ["--bind", stage.out_dir, _OUT]
        # the warm interpreter's cwd would be every run's pid 1's, until it leaves it
        argv += ["--chdir", "/" if warm else _BOX, "--remount-ro", "/", "--clearenv"]
        for index in range(0, len(_SANDBOX_ENV), 2):
            argv += ["--setenv", _SANDBOX_ENV[index], _SANDBOX_ENV[index + 1]]
        if stage.tty_init:
            argv += ["--setenv", "TERM", TERM]
        if self.seccomp_file is not None:
            argv += ["--seccomp", str(fd_seccomp)]  # the BPF filter
        argv += ["--", *_command(stage, names, tty_init=_TTY_INIT)]
        return argv

    def _scratch_args(self, warm: WarmBinaries | None) -> tuple[str, ...]:
        if warm:
            # The warm interpreter writes nowhere: /tmp and /box are only the mount points of
            # each run's own, in the read-only root. A writable one would be shared by its runs.
            return ("--dir", "/tmp", "--dir", _BOX)
        return (
            "--size", str(_TMPFS_BYTES), "--tmpfs", "/tmp",
            "--size", str(_TMPFS_BYTES), "--tmpfs", _BOX,
        )  # fmt: skip

    def _dev_args(self, stage: Stage) -> list[str]:
        # A tty run's terminal is made in a devpts instance of its own, which only --dev mounts
        # (newinstance): the prepared /dev has no pts, and the host's is never bound.
        if self.dev_dir is None or stage.tty_init:
            return ["--dev", "/dev"]  # a tmpfs, 6 device binds, a devpts: ~0.5 ms more
        # bound as it is: a read-only remount would add nodev; it is root's, 0755, so unwritable
        return ["--dev-bind", self.dev_dir, "/dev"]

    def _runtime_args(self, stage: Stage) -> tuple[str, ...]:
        if any("{runtime}" in part for part in stage.argv):
            return ("--ro-bind", self.runtime_dir, _RUNTIME)
        return ("--dir", _RUNTIME)


def launch_unsandboxed(
    stage: Stage, *, run_dir: str, runtime_dir: str, has_memory_cgroup: bool
) -> Launch:
    """The bare start of mode "none": the stage's files in `run_dir`, its working directory."""
    names = {
        "source": f"{run_dir}/{stage.source_name}",
        "binary": f"{stage.out_dir}/main" if stage.out_dir else (stage.binary or ""),
        "runtime": runtime_dir,
        "heap_cap": _heap_cap(stage, has_memory_cgroup),
    }
    if stage.source:
        with open(names["source"], "wb") as out:
            out.write(stage.source)
    env: tuple[str, ...] = ("PATH=/usr/bin:/bin", f"HOME={run_dir}", "LANG=C.UTF-8")
    if stage.tty_init:
        env += (f"TERM={TERM}",)
    # Unsandboxed, a tty run's terminal is one of the host's /dev/pts: mode "none" isolates
    # nothing, on purpose.
    command = _command(stage, names, tty_init=stage.tty_init)
    return Launch(argv=tuple(command), cwd=run_dir, env=env)


def _copied(stage: Stage, warm: WarmBinaries | None = None) -> list[tuple[str, str]]:
    """The host files the stage sees as read-only copies: (host path, path in the sandbox)."""
    copied = [(warm.interpreter, _WARM), (warm.init, _WARM_INIT)] if warm else []
    if stage.binary:
        copied.append((stage.binary, _BINARY))
    if stage.tty_init:
        copied.append((stage.tty_init, _TTY_INIT))
    return copied


def _heap_cap(stage: Stage, has_memory_cgroup: bool) -> str:
    # With a memory cgroup the kernel enforces the limit; a runtime flag would only slow starts.
    heap_mb = max(16, int(stage.memory_mb * 0.75))
    return "" if has_memory_cgroup else stage.heap_cap.format(heap_mb=heap_mb)


def _command(stage: Stage, names: dict[str, str], *, tty_init: str | None) -> list[str]:
    """The stage's argv with its templates filled in, then the program's own arguments verbatim;
    for a tty stage, after `tty_init` (where the stage's ttyinit is seen)."""
    command = [part.format(**names) for part in stage.argv]
    prefix = [tty_init] if stage.tty_init and tty_init else []
    return prefix + [part for part in command if part] + list(stage.args)
