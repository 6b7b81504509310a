"""The terminal of a tty run: a pseudo-terminal of the sandbox's own, its master held here.

Who makes it, and where: ``ttyinit`` (ttyinit.c, its docstring has the steps) runs inside the
sandbox in front of the program. It opens /dev/ptmx there, in the devpts instance bwrap
``--dev`` mounts for this run alone (never the host's /dev/pts), sends the master to the runner
over a unix socket, waits for the runner to set the window size, then makes the slave the
program's controlling terminal and stdin/stdout/stderr, and execs the program. The handshake,
from here::

    <- "tty" + the master (SCM_RIGHTS)     ttyinit has opened the slave too
    -> "go"                                the window size is set (TIOCSWINSZ); exec the program

The runner's pump then reads the master as the run's one output stream (stdout), writes
keystrokes to it, and resizes it (TIOCSWINSZ: the kernel sends the program SIGWINCH). The
master is closed when the run ends, and the pseudo-terminal goes with it.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import stat
import struct
import termios
import time

from runners import spawner

DEFAULT_COLS = 80
DEFAULT_ROWS = 24
# Beyond any screen (a 4K display in a 6-pixel font is 640 columns), within a winsize's u16.
MAX_COLS = 1000
MAX_ROWS = 1000
# End of input on a terminal is the EOF character (Ctrl-D) at the start of a line, not a
# closed fd: ttys have no half-close.
EOF_KEY = b"\x04"
_SOURCE = "ttyinit.c"
_PTMX = os.makedev(5, 2)  # /dev/ptmx (TTYAUX_MAJOR, 2), in whichever devpts instance


def build_init(work_root: str) -> str:
    """Return the path of the compiled ttyinit, built with gcc once per source; readable and
    executable by every slot uid (bwrap binds it into the sandbox as the slot's uid)."""
    return spawner.build_c(work_root, _SOURCE, "ttyinit", mode=0o755)


def check_size(cols: int, rows: int) -> None:
    """Raise ValueError unless 1 <= cols <= MAX_COLS and 1 <= rows <= MAX_ROWS."""
    for name, value, most in (("cols", cols, MAX_COLS), ("rows", rows, MAX_ROWS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise ValueError(f"terminal {name} must be an integer from 1 to {most}, got {value!r}")


def set_size(master_fd: int, cols: int, rows: int) -> None:
    """Resize the terminal; the kernel sends SIGWINCH to its foreground process group when the
    size changes (and nothing when it does not)."""
    fcntl.ioctl(master_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def accept(sock: socket.socket, timeout_s: float, size: tuple[int, int]) -> int | None:
    """Receive the master from ttyinit, give it the window size ``(cols, rows)`` and let the
    program start; return the master (close-on-exec), or None when ttyinit did not send one
    within `timeout_s` (the sandbox failed to start, or ended) or sent something else.

    Closes `sock` in every case.
    """
    master: int | None = None
    try:
        deadline = time.monotonic() + timeout_s
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while not poller.poll(max(0, int((deadline - time.monotonic()) * 1000)) + 1):
            if time.monotonic() >= deadline:
                return None
        try:
            message, fds, _flags, _address = socket.recv_fds(sock, 16, 4, socket.MSG_CMSG_CLOEXEC)
        except OSError:
            return None
        for extra in fds[1:]:
            os.close(extra)
        if fds:
            master = fds[0]
        if message != b"tty" or master is None or not _is_master(master):
            return None
        set_size(master, *size)
        sock.send(b"go")
        ready, master = master, None
        return ready
    except OSError:
        return None
    finally:
        if master is not None:
            os.close(master)
        sock.close()


def _is_master(fd: int) -> bool:
    """Whether fd is a pseudo-terminal master, as ttyinit opened it from /dev/ptmx."""
    info = os.fstat(fd)
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == _PTMX and os.isatty(fd)
