"""Prints what the sandbox answers to calls its seccomp filter denies (x86-64 numbers), one
"name: errno" a line; none of them does anything when denied."""

import ctypes
import errno
import os
import socket

libc = ctypes.CDLL(None, use_errno=True)
TIOCSTI = 0x5412
UFFD_USER_MODE_ONLY = 1
KCMP_VM = 1
# unsigned long arguments: a bare int reaches the call as a C int, its register's top half unset
ONE, ZERO = ctypes.c_ulong(1), ctypes.c_ulong(0)


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


me = os.getpid()
copied, original = ctypes.create_string_buffer(8), ctypes.create_string_buffer(b"original")
into, out_of = Iovec(ctypes.addressof(copied), 8), Iovec(ctypes.addressof(original), 8)
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
    # these need no privilege: without the filter each would work, on the program's own things
    "open_tree": (428, -100, b"/", 0),  # an O_PATH fd of / (no OPEN_TREE_CLONE)
    "userfaultfd": (323, UFFD_USER_MODE_ONLY),
    "personality": (135, 0xFFFFFFFF),  # only asks
    "kcmp": (312, me, me, KCMP_VM, 0, 0),
    "process_vm_readv": (310, me, ctypes.byref(into), ONE, ctypes.byref(out_of), ONE, ZERO),
    "pidfd_getfd": (438, os.pidfd_open(me), 0, 0),
    "perf_event_open": (298, None, 0, -1, -1, 0),
    "name_to_handle_at": (303, -100, b"/", None, None, 0),
}
for name, (number, *args) in CALLS.items():
    answer = libc.syscall(number, *args)
    print(f"{name}: {errno.errorcode.get(ctypes.get_errno(), answer) if answer < 0 else answer}")
with open("/proc/self/status") as status:
    print(next(line for line in status if line.startswith("Seccomp_filters")).strip())
os._exit(0)
