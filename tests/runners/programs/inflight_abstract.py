"""Tries to reach a Unix socket that an earlier run bound to an abstract name, then leaves its own
so bound in flight in a cycle of two Unix sockets (as inflight_leave.py leaves memfds), where no
process holds it and it stays connectable. Prints "reached" or "refused", then "left"."""

import array
import socket

NAME = b"\0livecode-inflight-abstract"

probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    probe.connect(NAME)
    print("reached")
except ConnectionRefusedError:
    print("refused")
probe.close()
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(NAME)
listener.listen()
first, second = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)


def send(over: socket.socket, fds: list[int]) -> None:
    over.sendmsg([b"."], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


send(first, [first.fileno(), listener.fileno()])  # into the receive queue of second
send(second, [second.fileno()])  # into the receive queue of first
print("left")
