/* ttyinit: gives the program of a tty run a terminal of the sandbox's own, then becomes it.

   Built with gcc by runners/terminal.py (once per source, kept in the work root) and started by
   bwrap in front of the program's command line: `ttyinit PROGRAM ARGS...`, with fd 0 a unix
   socket to the runner, fds 1 and 2 a pipe for its own error messages. It runs inside the
   sandbox, after bwrap has set it up: as the sandbox's uid, with no capabilities, under the
   seccomp filter, in the run's mount namespace, whose /dev/pts is a devpts instance of its own
   (bwrap --dev mounts one with newinstance). So the pseudo-terminal it opens at /dev/ptmx exists
   only there: it is not one of the host's /dev/pts, and no other run can see it.

       1. open /dev/ptmx (the master) and, through TIOCGPTPEER, the slave: no path lookup;
       2. send the master to the runner over fd 0 (SCM_RIGHTS, one message "tty");
       3. wait for "go": by then the runner has set the window size (TIOCSWINSZ), so the program
          reads the right size at its start;
       4. make the slave the controlling terminal of its session (bwrap --new-session made this
          process a session leader without one), and its stdin, stdout and stderr;
       5. close every other fd and exec the program (as pid 2 of the sandbox, as without a tty).

   No process stays behind: the runner holds the only master once this has exec'd, and the
   pseudo-terminal is gone when the run has ended and the runner closes it. C rather than Python:
   it is exec'd in front of every tty run (~0.3 ms instead of ~10). */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

static void fail(const char *what) {
    dprintf(2, "ttyinit: %s: %s\n", what, strerror(errno));
    _exit(127);
}

static void send_master(int sock, int master) {
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec iov = {"tty", 3};
    struct msghdr header = {0};
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&header);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &master, sizeof(int));
    if (sendmsg(sock, &header, MSG_NOSIGNAL) != 3) fail("send the terminal");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        dprintf(2, "usage: ttyinit PROGRAM [ARGS...]\n");
        return 127;
    }
    int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) fail("open /dev/ptmx");
    int unlock = 0;
    if (ioctl(master, TIOCSPTLCK, &unlock)) fail("unlock the terminal");
    /* opened before the master leaves: the runner never reads a master without its slave */
    int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
    if (slave < 0) fail("open the terminal");
    send_master(0, master);
    close(master);
    char go[8];
    ssize_t got;
    do got = recv(0, go, sizeof go, 0);
    while (got < 0 && errno == EINTR);
    if (got != 2 || memcmp(go, "go", 2) != 0) {
        errno = got < 0 ? errno : EPROTO;
        fail("the runner did not answer");
    }
    if (setsid() < 0 && errno != EPERM) fail("setsid"); /* EPERM: a session leader already */
    if (ioctl(slave, TIOCSCTTY, 0)) fail("make the terminal the controlling one");
    for (int fd = 0; fd < 3; fd++)
        if (dup2(slave, fd) < 0) fail("dup2");
    if (syscall(SYS_close_range, 3, ~0U, 0)) fail("close_range");
    execvp(argv[1], argv + 1);
    /* stderr is the terminal now: the message is the run's output, as a shell would show it */
    dprintf(2, "cannot run %s: %s\r\n", argv[1], strerror(errno));
    return 127;
}
