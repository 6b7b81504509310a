"""Tries to make a user namespace (as unshare -U does) and prints the run's limit on them."""

import ctypes
import os

CLONE_NEWUSER = 0x10000000
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(CLONE_NEWUSER) == 0:
    print("unshare: made")
else:
    print("unshare:", os.strerror(ctypes.get_errno()))
with open("/proc/sys/user/max_user_namespaces") as limit:
    print("max_user_namespaces:", limit.read().strip())
