"""Prints what the sandbox answers to calls its seccomp filter denies (x86-64 numbers), one
"name: errno" a line; none of them does anything when denied."""

import ctypes
import errno
import os
import socket

libc = ctypes.CDLL(None, use_errno=True)
TIOCSTI = 0x5412
CALLS = {
    # unshare(0) is a no-op the kernel allows without any capability: only the filter refuses it
    "unshare(0)": (272, 0),
    "mount": (165, None, None, None, 0, None),
    "umount2": (166, b"/nonexistent", 0),
    "keyctl": (250, 0, 0),
    "bpf": (321, 0, None, 0),
    "io_uring_setup": (425, 1, None),
    "ptrace": (101, 0x4206, 1, None, None),  # PTRACE_SEIZE pid 1
    "clone3": (435, None, 0),
    "ioctl(TIOCSTI)": (16, 0, TIOCSTI, None),
    "socket(AF_INET)": (41, socket.AF_INET, socket.SOCK_STREAM, 0),
}
for name, (number, *args) in CALLS.items():
    answer = libc.syscall(number, *args)
    print(f"{name}: {errno.errorcode.get(ctypes.get_errno(), answer) if answer < 0 else answer}")
with open("/proc/self/status") as status:
    print(next(line for line in status if line.startswith("Seccomp_filters")).strip())
os._exit(0)
