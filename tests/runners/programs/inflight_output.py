"""Exits with its stdout and stderr still open: in flight in a cycle of two Unix sockets (each
queued in the other's receive queue), which no process holds and only the kernel's collector of
Unix sockets closes, when some Unix socket somewhere is released. Then writes argv[1] (default 0)
bytes of "x", and a line."""

import array
import socket
import sys

first, second = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)


def send(over: socket.socket, fds: list[int]) -> None:
    over.sendmsg([b"."], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


send(first, [first.fileno(), 1, 2])  # into the receive queue of second
send(second, [second.fileno()])  # into the receive queue of first
sys.stdout.write("x" * int((sys.argv + ["0"])[1]))
print("exiting", flush=True)
