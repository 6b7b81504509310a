"""Makes a system call through the 32-bit entry (int 0x80), whose numbers are i386's: a filter
that only knew the x86-64 numbers would let every call through this way. Prints "started", then
what i386 getpid answered, if it returned."""

import ctypes
import mmap

CODE = bytes(
    (0xB8, 20, 0, 0, 0)  # mov eax, 20: getpid on i386
    + (0xCD, 0x80)  # int 0x80
    + (0xC3,)  # ret
)
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(CODE)
call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
print("started", flush=True)
print("i386 getpid:", call(), flush=True)
