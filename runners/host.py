"""Host preparation: the work root, the /dev to bind, slot indexes, slot cgroups and sweeps.

What the sandbox sets up on the host before any run, and the host-side kills that clean a slot.
Everything here runs as the worker (root in production): each check of the work root is what
keeps another local user from planting the spawner we run as root.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

from runners.errors import RunnerError, SandboxUnavailable

logger = logging.getLogger(__name__)

SLOT_UID_BASE = 61000
SWEEP_TIMEOUT_S = 10.0
_SLOT_LOCK_DIR = "/run/livecode-slots"
_MAX_SLOT_INDEX = 1000
_CGROUP_ROOT = "/sys/fs/cgroup"
_CGROUP_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
_CPU_PERIOD_US = 100_000  # quota = period: at most one core per run
# what a memory cgroup without processes may keep charged once reclaimed (kernel objects of its
# past runs); more is memory that no process holds and no reclaim frees
_CHARGED_WHEN_EMPTY_BYTES = 4 << 20
# where the sandbox's /dev is prepared: in the host's /dev, under a name that says whose it is
# and its layout (a new layout gets a new name)
_DEV_PARENT = "/dev"
_DEV_NAME = ".livecode-dev-2"
_DEVICES = (("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9))
_DEV_LINKS = (
    ("shm", "/tmp"),  # POSIX shm and semaphores (multiprocessing) in the run's /tmp tmpfs
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)


def default_work_root(is_root: bool) -> str:
    """Where the sandbox keeps its spawner, seccomp filter, runtime and cache by default."""
    # Not under a world-writable directory such as /var/tmp: another local user could create
    # the directory first and plant the spawner we run as root, or the seccomp filter.
    if is_root:
        return "/var/lib/livecode-runners"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    if not os.path.isabs(cache):  # no home: the temporary directory, checked like any other
        cache = os.path.join(tempfile.gettempdir(), f"livecode-{os.geteuid()}")
    return os.path.join(cache, "livecode-runners")


def private_directory(path: str) -> str:
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


def prepare_dev(parent: str = _DEV_PARENT) -> str | None:
    """A root-owned directory to bind as the sandbox's /dev: one bind instead of bwrap --dev.

    It holds the memory devices (null, zero, full, random, urandom, mode 0666 as on the host),
    the fd/stdin/stdout/stderr links and shm -> /tmp; no tty, no pts. It lives in the host's
    /dev, shared by every sandbox of the host: a bind shows in the sandbox's mountinfo as its
    path on its own filesystem, and on the host's devtmpfs that is ``/.livecode-dev-2``, where
    a directory of the work root would show the work root and the disk it is on (issue 11).
    Needs root (mknod, and /dev is root's); None otherwise.
    """
    directory = os.path.join(parent, _DEV_NAME)
    if _is_prepared_dev(directory):
        return directory
    try:
        temporary = tempfile.mkdtemp(dir=parent, prefix=f"{_DEV_NAME}-new-")
    except OSError as exc:
        logger.warning("cannot prepare /dev for the sandbox (%s); using bwrap --dev", exc)
        return None
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


def claim_slot_indexes(count: int, is_root: bool, work_root: str) -> list[tuple[int, int]]:
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


def make_cgroups(index: int, kind: str = "slot") -> dict[str, str]:
    """Create (or reuse) the slot's cgroups (``livecode/{kind}{index}``: "slot" for its cold
    runs, "warm" for its warm interpreter) where cgroup v1 is writable; {} otherwise."""
    made: dict[str, str] = {}
    for controller in _CGROUP_CONTROLLERS:
        base = os.path.join(_CGROUP_ROOT, controller)
        if not os.path.exists(os.path.join(base, "cgroup.procs")):
            continue
        directory = os.path.join(base, "livecode", f"{kind}{index}")
        try:
            os.makedirs(directory, exist_ok=True)
            kill_leftovers(directory)  # a crashed previous owner of this slot
            _configure(controller, directory)
        except OSError as exc:
            logger.warning("cgroup %s unavailable for slot %d: %s", controller, index, exc)
            continue
        made[controller] = directory
    return made


def renew_if_charged(cgroups: dict[str, str]) -> None:
    """Give the slot a new memory cgroup (at the same path) when its own, once its processes are
    gone, keeps memory charged that reclaim does not free: memory no process holds, such as what
    a run left in flight in Unix sockets, which every later run of the slot would pay for. The
    old cgroup lives on out of sight until the kernel frees that memory."""
    directory = cgroups.get("memory")
    if directory is None:
        return
    try:
        _write(directory, "memory.force_empty", 0)
        with open(os.path.join(directory, "memory.usage_in_bytes")) as usage:
            charged = int(usage.read())
        if charged <= _CHARGED_WHEN_EMPTY_BYTES:
            return
        logger.warning("renewing memory cgroup %s: %d MiB charged to it", directory, charged >> 20)
        os.rmdir(directory)
        os.mkdir(directory)
        _configure("memory", directory)
    except OSError as exc:
        logger.warning("cannot renew memory cgroup %s: %s", directory, exc)


def kill_leftovers(directory: str) -> bool:
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


def kill_uid(uid: int) -> None:
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
            timeout=SWEEP_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("cannot sweep the processes of uid %d: %s", uid, exc)


def bwrap_version(bwrap: str) -> str | None:
    """The installed bubblewrap's version, for /health/sandbox; None when it does not say."""
    try:
        done = subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, env={}, timeout=10, check=False
        )
    except OSError:
        return None
    return done.stdout.strip().removeprefix("bubblewrap ") or None


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


def _configure(controller: str, directory: str) -> None:
    if controller == "cpu":
        _write(directory, "cpu.cfs_period_us", _CPU_PERIOD_US)
        _write(directory, "cpu.cfs_quota_us", _CPU_PERIOD_US)
    if controller == "memory":
        try:
            _write(directory, "memory.swappiness", 0)
        except OSError:
            pass


def _write(directory: str, name: str, value: int) -> None:
    with open(os.path.join(directory, name), "w") as file:
        file.write(str(value))
