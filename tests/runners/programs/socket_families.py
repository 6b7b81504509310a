# Tries every address family with every socket type, and socketpair; prints what was allowed.
import socket

allowed = set()
for family in range(64):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET, socket.SOCK_RAW):
        for proto in (0, 1):
            try:
                socket.socket(family, kind, proto).close()
                allowed.add(family)
            except OSError:
                pass
pairs = set()
for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_TIPC, 40):
    try:
        for end in socket.socketpair(family, socket.SOCK_STREAM):
            end.close()
        pairs.add(family)
    except OSError:
        pass
print("socket:", " ".join(map(str, sorted(allowed))))
print("socketpair:", " ".join(map(str, sorted(pairs))))
