"""Tries to reach the warm interpreter it was forked from: find it, signal it, trace it, read its
memory, leave its namespaces. Prints found: [] when nothing worked."""

import ctypes
import os
import signal

libc = ctypes.CDLL(None, use_errno=True)
found = []
me = os.getpid()
pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
if pids != [1, me]:
    found.append(f"visible {pids}")
for pid in range(1, 1 << 15):  # every number the interpreter could have anywhere
    if pid in (1, me):
        continue
    try:
        os.kill(pid, 0)
        found.append(f"signals reach {pid}")
    except PermissionError:
        found.append(f"{pid} exists")
    except ProcessLookupError:
        pass
try:
    os.kill(-1, signal.SIGKILL)  # every process this run may signal but itself: none
    found.append("kill(-1) reached a process")
except ProcessLookupError:
    pass
os.kill(1, signal.SIGKILL)  # ignored: the init of its own PID namespace
PTRACE_ATTACH = 16
if libc.ptrace(PTRACE_ATTACH, 1, None, None) == 0:
    found.append("ptrace 1")


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


buffer = ctypes.create_string_buffer(64)
local = Iovec(ctypes.addressof(buffer), 64)
remote = Iovec(0x400000, 64)  # the interpreter is not position-independent: its code is there
if libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) >= 0:
    found.append("process_vm_readv 1")
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID = 0x10000000, 0x00020000, 0x20000000
for flags in (CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER | CLONE_NEWNS):
    if libc.unshare(flags) == 0:
        found.append(f"unshare {flags:#x}")
if libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None) == 0:
    found.append("mount")
if libc.umount2(b"/tmp", 2) == 0:  # MNT_DETACH: the interpreter's /tmp lies below the run's
    found.append("umount")
if os.path.exists("/proc/self/ns/user"):
    try:
        fd = os.open("/proc/self/ns/user", os.O_RDONLY)
        if libc.setns(fd, 0) == 0:
            found.append("setns")
    except OSError:
        pass
print("found:", found)
