"""Leaves memory behind that no process holds: memfds in flight in a cycle of two Unix sockets
(each queued in the other's receive queue), which only the kernel's collector of Unix sockets
frees, and that runs when some Unix socket somewhere is released. Prints "left N MiB"."""

import array
import os
import socket

MIB = b"A" * (1 << 20)
files = []
for _ in range(7):  # 15 MiB each: under RLIMIT_FSIZE
    fd = os.memfd_create("left")
    for _ in range(15):
        os.write(fd, MIB)
    files.append(fd)
first, second = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)


def send(over: socket.socket, fds: list[int]) -> None:
    over.sendmsg([b"."], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


send(first, [first.fileno(), *files])  # into the receive queue of second
send(second, [second.fileno()])  # into the receive queue of first
print(f"left {15 * len(files)} MiB")
