"""The seccomp deny-list given to bwrap (``--seccomp FD``), generated once as BPF.

Default action ALLOW; denied calls fail with an errno rather than killing, so programs see a
clean error. The list follows the sandbox study: kernel attack surface and escape routes that
no submitted program needs, and every socket family but AF_UNIX (no network at all, and none of
the other families' kernel code: vsock, bluetooth, packet, netlink...).
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import socket
import tempfile
from typing import Any

logger = logging.getLogger(__name__)

_DENIED = (
    "mount umount umount2 pivot_root chroot move_mount open_tree fsopen fsmount fsconfig fspick "
    "mount_setattr unshare setns bpf perf_event_open userfaultfd io_uring_setup io_uring_enter "
    "io_uring_register keyctl add_key request_key kexec_load kexec_file_load init_module "
    "finit_module delete_module reboot swapon swapoff acct syslog quotactl quotactl_fd "
    "open_by_handle_at name_to_handle_at fanotify_init ptrace process_vm_readv process_vm_writev "
    "kcmp pidfd_getfd personality clock_settime clock_adjtime settimeofday adjtimex iopl ioperm "
    "mbind migrate_pages move_pages set_mempolicy lookup_dcookie vhangup"
).split()
# socket() and socketpair() with any other family fail with EAFNOSUPPORT
_ALLOWED_FAMILY = socket.AF_UNIX
# part of the filter's file name: a work root built with an older rule set gets a new filter
FILTER_VERSION = 3
_CLONE_NEWUSER = 0x10000000
_TIOCSTI = 0x5412
# what the warm interpreter (warm.c) needs to give each run namespaces of its own
_WARM_ALLOWED = frozenset(("mount", "umount2", "unshare"))


class Scope(enum.Enum):
    """Which part of the deny-list a filter holds."""

    WHOLE = "whole"  # a cold run's filter (bwrap --seccomp)
    WARM = "warm"  # the warm interpreter's: all but what it needs to make each run's namespaces
    # what a warm run stacks on the interpreter's filter: exactly what that one leaves out, so
    # that the two answer every call as WHOLE does. A run installs it on each start; 18
    # instructions against WHOLE's 84 cost 55-75 us less CPU a run (the kernel prepares a
    # filter's action cache by running it for every syscall number).
    WARM_RUN = "warm-run"


def build_filter(path: str, scope: Scope = Scope.WHOLE) -> bool:
    """Write the BPF filter to ``path`` unless it exists; False when libseccomp is unavailable."""
    if os.path.exists(path):
        return True
    try:
        import pyseccomp as seccomp
    except ImportError:
        try:
            import seccomp
        except ImportError:
            logger.warning("no pyseccomp/python3-seccomp: sandbox runs without a seccomp filter")
            return False
    denied = seccomp.SyscallFilter(defaction=seccomp.ALLOW)

    def deny(error: int, name: str, *args: Any, warm_needs: bool = False) -> None:
        if (scope is Scope.WARM and warm_needs) or (scope is Scope.WARM_RUN and not warm_needs):
            return
        try:
            denied.add_rule(seccomp.ERRNO(error), name, *args)
        except (RuntimeError, ValueError, OSError):
            logger.debug("seccomp: syscall %s unknown here", name)

    for name in _DENIED:
        deny(errno.EPERM, name, warm_needs=name in _WARM_ALLOWED)
    other_family = seccomp.Arg(0, seccomp.NE, _ALLOWED_FAMILY)
    for call in ("socket", "socketpair"):
        deny(errno.EAFNOSUPPORT, call, other_family)
    new_user = seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_NEWUSER, _CLONE_NEWUSER)
    deny(errno.EPERM, "clone", new_user, warm_needs=True)
    # clone3 passes flags in memory that BPF cannot read: ENOSYS makes glibc fall back to clone
    deny(errno.ENOSYS, "clone3")
    # The kernel reads ioctl's request as 32 bits and BPF compares 64: TIOCSTI with a high bit
    # set must not pass, so only the low half is compared.
    deny(errno.EPERM, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, _TIOCSTI))
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".seccomp-")
    try:
        with os.fdopen(fd, "wb") as out:
            denied.export_bpf(out)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)  # atomic: other processes may build it at the same time
    except BaseException:
        os.unlink(temporary)
        raise
    return True
