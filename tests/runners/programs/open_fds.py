# Lists the file descriptors this program inherited (the listing's own fd is closed by then).
import fcntl
import os

names = os.listdir("/proc/self/fd")
still_open = []
for name in sorted(names, key=int):
    try:
        fcntl.fcntl(int(name), fcntl.F_GETFD)
        still_open.append(name)
    except OSError:
        pass
print("fds:", " ".join(still_open))
