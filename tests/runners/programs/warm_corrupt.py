"""Corrupts its own interpreter with ctypes: 1 is 2 from now on, and every module is forgotten."""

import ctypes
import sys

# the digit of the cached small int 1, after its refcount, type and size
ctypes.c_uint32.from_address(id(1) + 3 * ctypes.sizeof(ctypes.c_ssize_t)).value = 2
sys.modules.clear()
print("corrupted", flush=True)
ctypes.string_at(0)  # and it dies of it
