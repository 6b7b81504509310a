/* The per-slot spawner: a single-threaded root process living in its slot's cgroups.

   Built with gcc by runners/spawner.py (once per source, kept in the work root), which also draws
   the protocol this program speaks over its SOCK_SEQPACKET socket. It joins the slot's cgroups
   once, so each run inherits them without a per-run move (a move waits for an RCU grace period, ~9
   ms), and sets the memory limit and pids.max before each run. Being single-threaded it may fork
   and run code before exec, which the threaded worker may not: ids, rlimits, fds. It is a child
   subreaper: everything a run leaves behind is reparented here, swept and reaped. C rather than
   Python: a fork of a small process and the code between fork and exec cost ~0.1 ms instead of ~1
   ms, and waiting for a run's last processes blocks on SIGCHLD instead of polling.

   A warm spawner (a second one per slot, in cgroups and as a uid of its own) also starts the
   slot's warm Python interpreter (warm.c) once, and relays Python runs to it: the interpreter
   forks each run, this process sets the limits and measures the cgroups around it, and kills the
   interpreter when anything but its own processes outlives a run. */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 16
#define MAX_CGROUPS 8
#define MSG_BYTES (1 << 20)
#define MAX_ITEMS 8192
#define MAX_REQUEST (16 << 20)
/* what the spawner's own pages may grow by over its start-up figure (own_usage) */
#define OWN_SLACK (8LL << 20)
/* the longest wait for the kernel to free what a run left in flight (collect_left) */
#define LEFT_WAIT_MS 2000

static int sock;
static char *cg_memory, *cg_pids, *cg_cpuacct;
static long long own_usage; /* the memory cgroup's usage before any run: ours */
static char *cg_all[MAX_CGROUPS];
static int n_cg;
static int sockstat = -1; /* /proc/self/net/sockstat of our network namespace (the runs'), or -1 */
static int own_sockets;   /* the sockets of that namespace that are ours (a warm spawner's with
                             its interpreter), not a run's */
static char msg[MSG_BYTES + 1];

static void reply(const char *fmt, ...) {
    char out[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, sizeof out, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (n >= (int)sizeof out) n = sizeof out - 1;
    send(sock, out, (size_t)n, MSG_NOSIGNAL);
}

/* cgroup files stay open: a kernfs open costs more than the read or write (pread/pwrite at 0) */
struct cached { const char *dir, *name; int fd; };
static struct cached cache[32];
static int n_cached;

static int cg_fd(const char *dir, const char *name) {
    for (int k = 0; k < n_cached; k++)
        if (cache[k].dir == dir && strcmp(cache[k].name, name) == 0) return cache[k].fd;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) return -1;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    if (n_cached < (int)(sizeof cache / sizeof cache[0]))
        cache[n_cached++] = (struct cached){dir, name, fd};
    return fd;
}

static int read_file(const char *dir, const char *name, char *buf, size_t size) {
    int fd = cg_fd(dir, name);
    if (fd < 0) return -1;
    ssize_t n = pread(fd, buf, size - 1, 0);
    if (n < 0) return -1;
    buf[n] = 0;
    return 0;
}

/* cgroup.procs is read through a fresh fd: its task iterator does not restart reliably */
static int read_procs(const char *dir, char *buf, size_t size) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/cgroup.procs", dir) >= (int)sizeof path) return -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t total = 0;
    ssize_t n;
    while (total < size - 1 && (n = read(fd, buf + total, size - 1 - total)) > 0)
        total += (size_t)n;
    close(fd);
    buf[total] = 0;
    return 0;
}

static int read_ll(const char *dir, const char *name, long long *value) {
    char buf[64];
    if (read_file(dir, name, buf, sizeof buf)) return -1;
    *value = strtoll(buf, NULL, 10);
    return 0;
}

static int write_ll(const char *dir, const char *name, long long value) {
    char buf[32];
    int fd = cg_fd(dir, name);
    if (fd < 0) return -1;
    int n = snprintf(buf, sizeof buf, "%lld", value);
    return pwrite(fd, buf, (size_t)n, 0) == n ? 0 : -1;
}

static long long oom_kills(void) {
    char buf[1024];
    if (read_file(cg_memory, "memory.oom_control", buf, sizeof buf)) return 0;
    char *at = strstr(buf, "oom_kill ");
    return at ? strtoll(at + 9, NULL, 10) : 0;
}

static int write_limit(const char *name, long long value) {
    if (write_ll(cg_memory, name, value) == 0) return 0;
    if (errno != EBUSY) return -1;
    write_ll(cg_memory, "memory.force_empty", 0); /* page cache of the last run */
    return write_ll(cg_memory, name, value);
}

static int set_memory_limit(long long limit) {
    long long current;
    char probe[64];
    if (read_ll(cg_memory, "memory.limit_in_bytes", &current)) return -1;
    int has_memsw = read_file(cg_memory, "memory.memsw.limit_in_bytes", probe, sizeof probe) == 0;
    if (!has_memsw) return write_limit("memory.limit_in_bytes", limit);
    /* memsw must stay >= the memory limit at every step */
    if (limit > current)
        return write_limit("memory.memsw.limit_in_bytes", limit) ||
               write_limit("memory.limit_in_bytes", limit);
    return write_limit("memory.limit_in_bytes", limit) ||
           write_limit("memory.memsw.limit_in_bytes", limit);
}

/* SIGKILL every process of the cgroup but us; return how many were found */
static int kill_cgroup(const char *dir) {
    static char buf[1 << 20];
    if (read_procs(dir, buf, sizeof buf)) return 0;
    pid_t me = getpid();
    int found = 0;
    for (char *p = buf; *p;) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p) break;
        if (pid > 0 && pid != me) {
            found++;
            kill((pid_t)pid, SIGKILL);
        }
        p = end;
        while (*p == '\n') p++;
    }
    return found;
}

/* A network namespace of our own, with only lo (up), shared by this slot's runs one after
   another: creating and destroying one per run costs ~1 ms of CPU. Needs CAP_SYS_ADMIN. */
static int private_network(void) {
    if (unshare(CLONE_NEWNET)) return 0;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s >= 0) {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        strcpy(ifr.ifr_name, "lo");
        if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
            ifr.ifr_flags |= IFF_UP;
            ioctl(s, SIOCSIFFLAGS, &ifr);
        }
        close(s);
    }
    return 1;
}

/* The sockets of our network namespace not yet freed (any process's, in flight or not, closed
   but still referenced); -1 if unknown. One read, ~4 us: /proc/net/unix would list them, but
   walks every bucket of the namespace's table (~27 us) */
static int sockets_in_use(void) {
    char buf[4096];
    ssize_t n = pread(sockstat, buf, sizeof buf - 1, 0);
    if (n < 0) return -1;
    buf[n] = 0;
    int used;
    return sscanf(buf, "sockets: used %d", &used) == 1 ? used : -1;
}

static void sleep_ms(long ms) {
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&pause, &pause) && errno == EINTR) {}
}

static long long elapsed_ms(const struct timespec *since) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000LL + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* A run can leave memfds, files and sockets bound to an abstract name in flight in a cycle of
   Unix sockets (each queued in another's receive queue) and exit: no process holds them, and
   the kernel frees them only when its collector runs, which a Unix socket's release anywhere on
   the host schedules. Until then their memory stays charged to our cgroup, a loss to the next
   runs' limits, and their abstract names stay connectable from our network namespace, which
   the next runs share. Such a cycle keeps its sockets in use in our namespace: none but ours
   in use (one read, the normal case) means nothing was left. Otherwise release a socket of our
   own to schedule the collector until they are gone, then wait for our memory cgroup's usage
   to come back to our own (reclaiming the page cache the run left). 0 once back; -1 when not
   within LEFT_WAIT_MS: the slot must not run anything more in our cgroups and namespace. */
static int collect_left(void) {
    if (sockstat < 0) return 0;
    int count = sockets_in_use();
    if (count <= own_sockets) return count < 0 ? -1 : 0;
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    while (count > own_sockets) {
        if (elapsed_ms(&started) > LEFT_WAIT_MS) return -1;
        int pair[2];
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair) == 0) {
            close(pair[0]);
            close(pair[1]); /* the collector runs from a workqueue, its closes deferred a tick */
        }
        sleep_ms(2);
        if ((count = sockets_in_use()) < 0) return -1;
    }
    if (!cg_memory) return 0;
    for (int emptied = 0;; sleep_ms(2)) {
        long long usage;
        if (read_ll(cg_memory, "memory.usage_in_bytes", &usage)) return -1;
        if (usage <= own_usage + OWN_SLACK) return 0;
        int late = elapsed_ms(&started) > LEFT_WAIT_MS;
        if (emptied == 0 || (late && emptied == 1)) {
            write_ll(cg_memory, "memory.force_empty", 0); /* reclaimable: not the run's loss */
            emptied++;
        } else if (late) {
            return -1;
        }
    }
}

static void kill_uid(int uid) {
    /* kill(-1) as the slot's uid reaches every process of that uid and nothing else */
    pid_t pid = fork();
    if (pid == 0) {
        if (setresuid(uid, uid, uid) == 0) kill(-1, SIGKILL);
        _exit(0);
    }
    if (pid > 0) waitpid(pid, NULL, 0);
}

struct request {
    int uid, gid;
    const char *cwd;
    long long memory, pids_max;
    int n_rlimits;
    long long rlimits[16][3];
    char **argv, **env;
};

static char *items[MAX_ITEMS];

/* "run\0uid\0gid\0cwd\0memory\0pids\0N\0(res\0soft\0hard\0)*N argc\0argv*\0envc\0env*" */
static int parse(char *buf, size_t size, struct request *req) {
    int n = 0;
    char *p = buf, *end = buf + size;
    buf[size] = 0;
    while (p <= end && n < MAX_ITEMS - 2) {
        items[n++] = p;
        p += strlen(p) + 1;
    }
    int i = 1;
#define NEED(k) if (i + (k) > n) return -1
    NEED(6);
    req->uid = *items[i] ? atoi(items[i]) : -1; i++;
    req->gid = *items[i] ? atoi(items[i]) : -1; i++;
    req->cwd = *items[i] ? items[i] : NULL; i++;
    req->memory = *items[i] ? strtoll(items[i], NULL, 10) : -1; i++;
    req->pids_max = *items[i] ? strtoll(items[i], NULL, 10) : -1; i++;
    req->n_rlimits = atoi(items[i++]);
    if (req->n_rlimits < 0 || req->n_rlimits > 16) return -1;
    NEED(3 * req->n_rlimits + 1);
    for (int r = 0; r < req->n_rlimits; r++)
        for (int k = 0; k < 3; k++) req->rlimits[r][k] = strtoll(items[i++], NULL, 10);
    int argc = atoi(items[i++]);
    if (argc < 1) return -1;
    NEED(argc + 1);
    req->argv = &items[i];
    i += argc;
    int envc = atoi(items[i]);
    items[i++] = NULL; /* terminates argv */
    if (envc < 0) return -1;
    NEED(envc);
    req->env = &items[i];
    i += envc;
    items[i] = NULL;
    return 0;
}

static void fail(int error_w, const char *what, const char *arg) {
    char out[1024];
    int n = snprintf(out, sizeof out, "cannot start %s: %s: %s", arg, what, strerror(errno));
    if (n > (int)sizeof out - 1) n = sizeof out - 1;
    if (write(error_w, out, (size_t)n) < 0) _exit(127);
    _exit(127);
}

/* The OOM killer never picks the spawner (root, in the slot's memory cgroup, where a run can fill
   memory with pages of no process: memfd, tmpfs), and picks the runs first. Lowering the value
   needs CAP_SYS_RESOURCE: without it there is no memory cgroup either. */
static void set_oom_score_adj(const char *value) {
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    if (write(fd, value, strlen(value)) < 0) {}
    close(fd);
}

static void exec_child(struct request *req, int *fds, int n_fds, int error_w,
                       const char *oom_score_adj) {
    /* the error pipe survives until exec (close-on-exec): a failure here reaches the spawner */
    const char *name = req->argv[0];
    int err = fcntl(error_w, F_DUPFD_CLOEXEC, 64 + 2 * MAX_FDS);
    if (err < 0) fail(error_w, "fcntl", name);
    int high[MAX_FDS];
    for (int k = 0; k < n_fds; k++)
        if ((high[k] = fcntl(fds[k], F_DUPFD, 64 + MAX_FDS)) < 0) fail(err, "fcntl", name);
    for (int k = 0; k < n_fds; k++)
        if (dup2(high[k], k) < 0) fail(err, "dup2", name); /* dup2 clears close-on-exec */
    if (syscall(SYS_close_range, n_fds, err - 1, 0) ||
        syscall(SYS_close_range, err + 1, ~0U, 0))
        fail(err, "close_range", name);
    set_oom_score_adj(oom_score_adj); /* before dropping root */
    sigset_t none;
    sigemptyset(&none);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int r = 0; r < req->n_rlimits; r++) {
        struct rlimit limit = {(rlim_t)req->rlimits[r][1], (rlim_t)req->rlimits[r][2]};
        if (req->rlimits[r][1] < 0) limit.rlim_cur = RLIM_INFINITY;
        if (req->rlimits[r][2] < 0) limit.rlim_max = RLIM_INFINITY;
        if (setrlimit((int)req->rlimits[r][0], &limit)) fail(err, "setrlimit", name);
    }
    if (req->cwd && chdir(req->cwd)) fail(err, "chdir", name);
    if (req->gid >= 0) {
        if (setgroups(0, NULL)) fail(err, "setgroups", name);
        if (setresgid(req->gid, req->gid, req->gid)) fail(err, "setresgid", name);
    }
    if (req->uid >= 0 && setresuid(req->uid, req->uid, req->uid)) fail(err, "setresuid", name);
    execve(name, req->argv, req->env);
    fail(err, "execve", name);
}

/* Reap the run's every process (killing what is left); add their usage */
static void reap_everything(int uid, struct rusage *total, long *maxrss) {
    struct timespec started, now, tick = {0, 2000000};
    clock_gettime(CLOCK_MONOTONIC, &started);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    const char *dir = cg_pids ? cg_pids : (n_cg ? cg_all[0] : NULL);
    int swept_uid = 0;
    for (;;) {
        int status;
        struct rusage usage;
        pid_t pid = wait4(-1, &status, WNOHANG, &usage);
        if (pid > 0) {
            timeradd(&total->ru_utime, &usage.ru_utime, &total->ru_utime);
            timeradd(&total->ru_stime, &usage.ru_stime, &total->ru_stime);
            if (usage.ru_maxrss > *maxrss) *maxrss = usage.ru_maxrss;
            continue;
        }
        if (pid < 0) break; /* ECHILD: nothing left */
        /* children remain (bwrap's pid 1 winding down, or a leftover): kill them all */
        if (dir) kill_cgroup(dir);
        if (!dir && uid >= 0 && !swept_uid) {
            kill_uid(uid);
            swept_uid = 1;
        }
        sigtimedwait(&chld, NULL, &tick); /* woken as soon as one exits */
    }
    /* not our children (cannot be), but never leave one behind */
    for (int k = 0; k < n_cg; k++) {
        while (kill_cgroup(cg_all[k])) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - started.tv_sec > 10) break;
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
    }
}

/* What a run is measured against: the cgroups' figures when it started */
struct measure {
    long long memory, baseline, oom_before, cpu_before;
};

/* set_memory_limit, waiting (bounded) while it fails with EBUSY: more is charged than the new
   limit and reclaim frees none of it. That is what an earlier run left, which the kernel frees
   late, from workqueues: its IPC namespace's System V segments, say. It is not the next run's
   to pay for by failing to start. */
static int set_memory_limit_waiting(long long limit) {
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    while (set_memory_limit(limit)) {
        if (errno != EBUSY || elapsed_ms(&started) > LEFT_WAIT_MS) return -1;
        sleep_ms(2);
    }
    return 0;
}

/* Set the memory limit and pids.max of the next run and take its starting figures; on failure
   the error is replied and -1 returned */
static int set_limits(long long memory, long long pids_max, struct measure *m) {
    m->memory = memory;
    m->baseline = m->oom_before = m->cpu_before = 0;
    if (cg_memory && memory >= 0) {
        /* The spawner's own pages are charged here too (and a warm spawner's interpreter's):
           the limit leaves room for them. Not for the page cache earlier runs left charged
           here: counted in, it would raise the limit run after run without bound. The kernel
           reclaims that cache under pressure. */
        /* the peak is measured from the usage once the limit is set: setting it may reclaim */
        if (read_ll(cg_memory, "memory.usage_in_bytes", &m->baseline) ||
            set_memory_limit_waiting(memory + (m->baseline < own_usage + OWN_SLACK
                                                   ? m->baseline : own_usage + OWN_SLACK)) ||
            write_ll(cg_memory, "memory.max_usage_in_bytes", 0) ||
            read_ll(cg_memory, "memory.usage_in_bytes", &m->baseline)) {
            reply("error cannot set the memory cgroup: %s", strerror(errno));
            return -1;
        }
        m->oom_before = oom_kills();
    }
    if (cg_pids && pids_max >= 0 && write_ll(cg_pids, "pids.max", pids_max)) {
        reply("error cannot set the pids cgroup: %s", strerror(errno));
        return -1;
    }
    if (cg_cpuacct && read_ll(cg_cpuacct, "cpuacct.usage", &m->cpu_before)) m->cpu_before = -1;
    return 0;
}

/* The exit report of a run, with what the cgroups measured since set_limits and whether what
   it left in flight is still there (collect_left) */
static void report(int status, long long utime_us, long long stime_us, long maxrss,
                   const struct measure *m, int left) {
    long long cpu_ns = -1, peak = -1, oom = 0;
    if (cg_cpuacct && m->cpu_before >= 0 && read_ll(cg_cpuacct, "cpuacct.usage", &cpu_ns) == 0)
        cpu_ns -= m->cpu_before;
    else
        cpu_ns = -1;
    if (cg_memory && m->memory >= 0) {
        if (read_ll(cg_memory, "memory.max_usage_in_bytes", &peak) == 0)
            peak -= m->baseline;
        else
            peak = -1;
        oom = oom_kills() > m->oom_before;
    }
    reply("exit %d %lld %lld %ld %lld %lld %lld %d", status, utime_us, stime_us, maxrss, cpu_ns,
          peak, oom, left);
}

/* Start one run, wait for it and report; 0 when the Sandbox went away meanwhile */
static int run(char *buf, size_t size, int *fds, int *n_fds) {
    struct request req;
    if (parse(buf, size, &req)) {
        reply("error malformed request");
        return 1;
    }
    struct measure m;
    if (set_limits(req.memory, req.pids_max, &m)) return 1;
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC)) {
        reply("error pipe: %s", strerror(errno));
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(pipe_fds[0]);
        exec_child(&req, fds, *n_fds, pipe_fds[1], "1000");
    }
    close(pipe_fds[1]);
    for (int k = 0; k < *n_fds; k++) close(fds[k]);
    *n_fds = 0;
    if (pid < 0) {
        close(pipe_fds[0]);
        reply("error fork: %s", strerror(errno));
        return 1;
    }
    char error[2048];
    ssize_t got;
    do got = read(pipe_fds[0], error, sizeof error - 1);
    while (got < 0 && errno == EINTR);
    close(pipe_fds[0]);
    if (got > 0) {
        error[got] = 0;
        waitpid(pid, NULL, 0);
        reply("error %s", error);
        return 1;
    }
    reply("pid %d", (int)pid);
    int alive = 1;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct pollfd polls[2] = {{sock, POLLIN, 0}, {pidfd, POLLIN, 0}};
    while (pidfd >= 0) {
        if (poll(polls, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (polls[0].revents) {
            ssize_t n = recv(sock, msg, MSG_BYTES, 0);
            if (n <= 0) {
                alive = 0;
                kill(pid, SIGKILL); /* safe: pid is not reaped yet */
                polls[0].fd = -1;
            } else if ((size_t)n == 4 && memcmp(msg, "kill", 4) == 0) {
                kill(pid, SIGKILL);
            }
        }
        if (polls[1].revents) break;
    }
    if (pidfd >= 0) close(pidfd);
    int status = 0;
    struct rusage total;
    while (wait4(pid, &status, 0, &total) < 0 && errno == EINTR) {}
    long maxrss = total.ru_maxrss;
    reap_everything(req.uid, &total, &maxrss);
    if (alive)
        report(status, (long long)total.ru_utime.tv_sec * 1000000 + total.ru_utime.tv_usec,
               (long long)total.ru_stime.tv_sec * 1000000 + total.ru_stime.tv_usec, maxrss,
               &m, collect_left() != 0);
    return alive;
}


/* A warm spawner's interpreter (warm.c): its bwrap is our child, its socket our end */
static pid_t warm_pid = -1;
static int warm_sock = -1;
static int warm_count; /* processes of the slot's cgroup but us once it is ready: its own */

/* Processes in the slot's cgroup but us; -1 when it cannot be read */
static int count_procs(void) {
    static char buf[1 << 16];
    const char *dir = cg_pids ? cg_pids : (n_cg ? cg_all[0] : NULL);
    if (!dir || read_procs(dir, buf, sizeof buf)) return -1;
    int count = 0;
    pid_t me = getpid();
    for (char *p = buf; *p;) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p) break;
        if (pid > 0 && pid != me) count++;
        p = end;
        while (*p == '\n') p++;
    }
    return count;
}

/* Kill the interpreter and everything of the slot's cgroups, and reap them */
static void kill_warm(void) {
    if (warm_sock >= 0) close(warm_sock);
    warm_sock = -1;
    if (warm_pid > 0) kill(warm_pid, SIGKILL);
    warm_pid = -1;
    own_sockets = 0;
    struct rusage ignored;
    memset(&ignored, 0, sizeof ignored);
    long maxrss = 0;
    reap_everything(-1, &ignored, &maxrss);
}

/* A reply of the interpreter within the start-up wait, NUL-terminated; its length or -1 */
static ssize_t warm_reply(char *buf, size_t size, int timeout_ms) {
    struct pollfd wait = {warm_sock, POLLIN, 0};
    int ready;
    do ready = poll(&wait, 1, timeout_ms);
    while (ready < 0 && errno == EINTR);
    if (ready <= 0) return -1;
    ssize_t n = recv(warm_sock, buf, size - 1, 0);
    if (n <= 0) return -1;
    buf[n] = 0;
    return n;
}

/* "warm" + a run request: start the slot's interpreter with our end of a new socket as one
   more fd after the request's; reply "ready" once it has said so */
static void start_warm(char *buf, size_t size, int *fds, int *n_fds) {
    struct request req;
    if (warm_pid > 0 || parse(buf, size, &req) || *n_fds >= MAX_FDS) {
        reply("error malformed warm request");
        return;
    }
    int pair[2], pipe_fds[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair)) {
        reply("error socketpair: %s", strerror(errno));
        return;
    }
    fds[(*n_fds)++] = pair[1];
    if (pipe2(pipe_fds, O_CLOEXEC)) {
        close(pair[0]);
        reply("error pipe: %s", strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(pipe_fds[0]);
        /* the OOM killer takes a run (1000) before the interpreter, never the spawner */
        exec_child(&req, fds, *n_fds, pipe_fds[1], "-999");
    }
    close(pipe_fds[1]);
    for (int k = 0; k < *n_fds; k++) close(fds[k]);
    *n_fds = 0;
    char error[2048];
    ssize_t got = -1;
    if (pid > 0) {
        do got = read(pipe_fds[0], error, sizeof error - 1);
        while (got < 0 && errno == EINTR);
    }
    close(pipe_fds[0]);
    if (pid < 0 || got > 0) {
        close(pair[0]);
        if (pid > 0) waitpid(pid, NULL, 0);
        error[got > 0 ? got : 0] = 0;
        reply("error %s", pid < 0 ? strerror(errno) : error);
        return;
    }
    warm_pid = pid;
    warm_sock = pair[0];
    char ready[64];
    if (warm_reply(ready, sizeof ready, 30000) != 5 || memcmp(ready, "ready", 5) != 0) {
        kill_warm();
        reply("error the warm interpreter did not start");
        return;
    }
    warm_count = count_procs();
    /* ours and the interpreter's */
    if (sockstat >= 0 && (own_sockets = sockets_in_use()) < 0) own_sockets = 0;
    /* from now on our own usage includes the interpreter's: runs are measured above it */
    if (cg_memory && read_ll(cg_memory, "memory.usage_in_bytes", &own_usage)) own_usage = 0;
    reply("ready");
}

/* "warmrun\0memory\0pids_max" + fds for the interpreter: a run forked from it, measured
   and reported as run() does; 0 when the Sandbox went away meanwhile */
static int warm_run(char *buf, size_t size, int *fds, int *n_fds) {
    char *fields[3];
    char *p = buf, *end = buf + size;
    buf[size] = 0;
    for (int k = 0; k < 3; k++) {
        if (p > end) {
            reply("error malformed request");
            return 1;
        }
        fields[k] = p;
        p += strlen(p) + 1;
    }
    if (warm_pid <= 0) {
        reply("gone");
        return 1;
    }
    struct measure m;
    long long memory = *fields[1] ? strtoll(fields[1], NULL, 10) : -1;
    long long pids_max = *fields[2] ? strtoll(fields[2], NULL, 10) : -1;
    if (set_limits(memory, pids_max, &m)) return 1;
    char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    memset(control, 0, sizeof control);
    struct iovec iov = {"run", 3};
    struct msghdr header = {0};
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = CMSG_SPACE(sizeof(int) * *n_fds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&header);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * *n_fds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * *n_fds);
    ssize_t sent = sendmsg(warm_sock, &header, MSG_NOSIGNAL);
    for (int k = 0; k < *n_fds; k++) close(fds[k]);
    *n_fds = 0;
    char answer[1100];
    if (sent < 0 || warm_reply(answer, sizeof answer, 30000) < 0) {
        kill_warm();
        reply("gone");
        return 1;
    }
    if (strncmp(answer, "error ", 6) == 0) {
        reply("%s", answer);
        return 1;
    }
    if (strncmp(answer, "pid ", 4) != 0) {
        kill_warm();
        reply("gone");
        return 1;
    }
    reply("pid %s", answer + 4);
    struct pollfd polls[2] = {{sock, POLLIN, 0}, {warm_sock, POLLIN, 0}};
    for (;;) {
        if (poll(polls, 2, -1) < 0) {
            if (errno == EINTR) continue;
            kill_warm();
            reply("gone");
            return 1;
        }
        if (polls[0].revents) {
            ssize_t n = recv(sock, msg, MSG_BYTES, 0);
            if (n <= 0) {
                kill_warm();
                return 0;
            }
            if ((size_t)n == 4 && memcmp(msg, "kill", 4) == 0)
                send(warm_sock, "kill", 4, MSG_NOSIGNAL);
        }
        if (polls[1].revents) break;
    }
    int status;
    long long utime_us, stime_us;
    long maxrss;
    if (warm_reply(answer, sizeof answer, 0) < 0 ||
        sscanf(answer, "exit %d %lld %lld %ld", &status, &utime_us, &stime_us, &maxrss) != 4) {
        kill_warm();
        reply("gone");
        return 1;
    }
    report(status, utime_us, stime_us, maxrss, &m, collect_left() != 0);
    /* C's death ended every process of the run; one more here is a way out of its namespace:
       the interpreter is not trusted with another run */
    if (count_procs() != warm_count) kill_warm();
    return 1;
}

/* A long request, from a memfd (closed here): malloc'd, NUL-terminable; NULL on failure */
static char *read_request(int fd, size_t *size) {
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) == 0 && st.st_size >= 4 && st.st_size <= MAX_REQUEST &&
        (buf = malloc((size_t)st.st_size + 1))) {
        size_t total = 0;
        while (total < (size_t)st.st_size) {
            ssize_t n = pread(fd, buf + total, (size_t)st.st_size - total, (off_t)total);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            total += (size_t)n;
        }
        if (total == (size_t)st.st_size) {
            *size = total;
        } else {
            free(buf);
            buf = NULL;
        }
    }
    close(fd);
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    sock = atoi(argv[1]);
    /* passed to us inheritable: never to a run (exec_child closes it too) */
    if (fcntl(sock, F_SETFD, FD_CLOEXEC)) return 2;
    signal(SIGINT, SIG_IGN); /* Ctrl-C in a terminal is for the caller */
    signal(SIGPIPE, SIG_IGN);
    set_oom_score_adj("-1000");
    /* Unsandboxed runs (mode "none") reach the host's Unix sockets by path: a host service's
       end of such a connection is counted in our namespace, not a leftover of the run. */
    int is_sandboxed = 1;
    for (int k = 2; k < argc && n_cg < MAX_CGROUPS; k++) {
        if (!strcmp(argv[k], "unsandboxed")) {
            is_sandboxed = 0;
            continue;
        }
        char *eq = strchr(argv[k], '=');
        if (!eq) return 2;
        *eq = 0;
        char *dir = eq + 1;
        if (write_ll(dir, "cgroup.procs", getpid())) {
            perror("cgroup.procs");
            return 1;
        }
        cg_all[n_cg++] = dir;
        if (!strcmp(argv[k], "memory")) cg_memory = dir;
        if (!strcmp(argv[k], "pids")) cg_pids = dir;
        if (!strcmp(argv[k], "cpuacct")) cg_cpuacct = dir;
    }
    if (cg_memory) {
        write_ll(cg_memory, "memory.force_empty", 0); /* what an earlier spawner left */
        if (read_ll(cg_memory, "memory.usage_in_bytes", &own_usage)) own_usage = 0;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) return 1;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL); /* taken with sigtimedwait while reaping */
    int has_network = private_network();
    if (has_network && is_sandboxed) sockstat = open("/proc/self/net/sockstat", O_RDONLY | O_CLOEXEC);
    reply(has_network ? "ready netns" : "ready");
    for (;;) {
        char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
        struct iovec iov = {msg, MSG_BYTES};
        struct msghdr header = {0};
        header.msg_iov = &iov;
        header.msg_iovlen = 1;
        header.msg_control = control;
        header.msg_controllen = sizeof control;
        ssize_t size = recvmsg(sock, &header, MSG_CMSG_CLOEXEC);
        if (size < 0 && errno == EINTR) continue;
        if (size <= 0) return 0; /* the Sandbox is gone */
        int fds[MAX_FDS], n_fds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&header); c; c = CMSG_NXTHDR(&header, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int *data = (int *)CMSG_DATA(c);
            for (int k = 0; k < count; k++) {
                if (n_fds < MAX_FDS) fds[n_fds++] = data[k];
                else close(data[k]);
            }
        }
        int keep = 1;
        if (size >= 4 && memcmp(msg, "run", 4) == 0) {
            keep = run(msg, (size_t)size, fds, &n_fds);
        } else if (size >= 5 && memcmp(msg, "warm", 5) == 0) {
            start_warm(msg, (size_t)size, fds, &n_fds);
        } else if (size >= 8 && memcmp(msg, "warmrun", 8) == 0) {
            keep = warm_run(msg, (size_t)size, fds, &n_fds);
        } else if (size == 5 && memcmp(msg, "runfd", 5) == 0) {
            size_t length = 0;
            char *request = n_fds > 0 ? read_request(fds[--n_fds], &length) : NULL;
            if (request && memcmp(request, "run", 4) == 0)
                keep = run(request, length, fds, &n_fds);
            else
                reply("error cannot read the request");
            free(request);
        }
        for (int k = 0; k < n_fds; k++) close(fds[k]);
        if (!keep) return 0;
    }
}
