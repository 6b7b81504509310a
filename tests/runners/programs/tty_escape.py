# Hostile in a terminal: reach any other terminal (the host's, another run's) and type into it.
# Prints one line per path: "PATH opened" (and wrote the marker) or "PATH ERRNO_NAME".
import errno
import fcntl
import os
import sys
import termios

marker = (sys.argv[1] if len(sys.argv) > 1 else "ESCAPED") + "\n"
own = os.fstat(0).st_rdev if os.isatty(0) else None
paths = ["/dev/console", "/dev/tty", "/dev/tty0", "/dev/tty1", "/dev/ptmx", "/dev/pts/ptmx"]
paths += [f"/dev/pts/{n}" for n in range(64)]
try:
    print("pts", sorted(os.listdir("/dev/pts")))
except OSError as exc:
    print("pts", errno.errorcode[exc.errno])
for path in paths:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    except OSError as exc:
        if not (path.startswith("/dev/pts/") and exc.errno == errno.ENOENT):
            print(path, errno.errorcode[exc.errno])
        continue
    if path.endswith("ptmx"):
        print(path, "opened")  # a new terminal in whichever devpts instance this /dev has
        os.close(fd)
        continue
    try:
        os.write(fd, marker.encode())
        print(path, "opened", "own" if own is not None and os.fstat(fd).st_rdev == own else "")
    except OSError as exc:
        print(path, "opened", errno.errorcode[exc.errno])
    os.close(fd)
# typing into the own terminal's input (TIOCSTI) is refused by the seccomp filter
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
    print("TIOCSTI worked")
except OSError as exc:
    print("TIOCSTI", errno.errorcode[exc.errno])
sys.stdout.flush()
