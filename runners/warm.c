/* The warm Python of a slot (W): an interpreter initialised once, forked for each run.

   Built with gcc against the static libpython of /usr/bin/python3 by runners/warm.py (which also
   draws the protocol), started by the slot's warm spawner inside bwrap exactly as a cold run's
   python3 is (same namespaces, uid 65534, no capabilities), but with cwd /, no tmpfs on /tmp and
   /box, without --disable-userns and with a seccomp filter that still allows unshare and mount:
   each run makes namespaces of its own.

   W is `python3 -u -I /box/main.py` split in two: Py_InitializeFromConfig with that command line
   (python's own main does the same), then, instead of running the file, a loop in C that never
   runs Python code. For each run W clones a child C with new user, mount, PID and IPC namespaces:
   C is pid 1 of the run (as bwrap's init is for a cold run). C is a vfork child: it shares W's
   memory, on W's stack below W's frames, while W waits, so the kernel copies W's memory once a
   run (for R), not twice. C mounts a fresh /proc, /tmp and /box, writes the source, leaves W's
   cwd for /, sets the run's limit of 0 user namespaces, then takes the run's rlimits, drops
   every capability (bounding set included), sets no_new_privs, stacks on W's seccomp filter the
   rest of the cold runs' (what W's allows for C: together they answer as the cold one does), is
   not dumpable, and only then forks R (pid 2), which inherits all of
   that, and executes warm_init.c (a small static program: W resumes). R waits until that init
   says it is not dumpable, puts stdin/stdout/stderr on the run's pipes and goes back to Python:
   new sys.std* objects on the new fds, the run's sys.argv, and Py_RunMain, which runs
   /box/main.py as python3 does. init only reaps. W itself has cwd / and a read-only /tmp and
   /box: it writes nowhere, so it has nothing writable that its runs share; what C wrote of W's
   memory (its stack, the mm's dumpable flag) W discards or sets back.

   Why a run cannot reach W: W is in none of the run's namespaces but the network's and the
   user namespace's parent; the run's PID namespace has no number for W (kill, ptrace, pidfd_open,
   process_vm_readv and /proc all need one, and the filter denies ptrace, process_vm_* and kcmp
   anyway); the capabilities C held during set-up are of the run's own user namespace, which
   owns nothing of W's, and gone before any of the run's code runs; no code of the run runs
   while C shares W's memory; W and init are not dumpable.
   When init exits the kernel kills every process left in the run's PID namespace, so killing it
   (cancel, timeout) ends the whole run.

   Protocol on the control socket (SOCK_SEQPACKET, fd argv[1]); argv[2] is an fd holding the
   BPF filter each run stacks on W's (seccomp.py, Scope.WARM_RUN):
     <- "ready"                                  once the interpreter is initialised
     -> "run" + fds stdin, stdout, stderr, source (memfd), request (memfd: "N\0(res\0soft\0hard\0)*N
        argc\0arg*")
     <- "pid N" or "error text"
     -> "kill"                                   (optional; one after the run ended: ignored)
     <- "exit STATUS UTIME_US STIME_US MAXRSS_KIB" once C and so every process of the run is gone
   EOF on the socket: W kills a run under way and exits. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define SANDBOX_ID 65534 /* the uid and gid of every sandboxed program, as bwrap --uid gives */
#define TMPFS_OPTIONS "size=67108864,mode=0755" /* as bwrap --size 64 MiB --tmpfs */
#define N_FDS 5 /* stdin, stdout, stderr, source, request */
#define MAX_ARGS 4096
#define MAX_REQUEST (16 << 20)
#define INIT_PATH "/opt/livecode-init" /* warm_init.c, copied in beside W */

static const char *const PYTHON_ARGV[] = {"/usr/bin/python3", "-u", "-I", "/box/main.py"};

/* sys.stdin/stdout/stderr as python's create_stdio makes them with -u, on the run's fds: the
   objects W made describe W's fds (whether they are seekable is cached) */
static const char STDIO[] =
    "import io, sys\n"
    "def make(fd, name, old, write):\n"
    "    buffer = io.open(fd, 'wb' if write else 'rb', 0 if write else -1, closefd=False)\n"
    "    (buffer if write else buffer.raw).name = name\n"
    "    text = io.TextIOWrapper(buffer, old.encoding, old.errors, '\\n', False, True)\n"
    "    text.mode = 'w' if write else 'r'\n"
    "    return text\n"
    "sys.stdin = sys.__stdin__ = make(0, '<stdin>', sys.__stdin__, False)\n"
    "sys.stdout = sys.__stdout__ = make(1, '<stdout>', sys.__stdout__, True)\n"
    "sys.stderr = sys.__stderr__ = make(2, '<stderr>', sys.__stderr__, True)\n";

/* pycore_pylifecycle.h: set by PyErr_Print when the program ends on KeyboardInterrupt; the exit
   code a SystemExit asks for (its message printed) */
extern int _Py_UnhandledKeyboardInterrupt;
extern int _Py_HandleSystemExit(int *exitcode);

static int control;
static PyObject *stdio_code; /* STDIO, compiled once in W: not once a run */
static struct sock_fprog filter;

static void reply(const char *fmt, ...) {
    char out[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, sizeof out, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (n >= (int)sizeof out) n = sizeof out - 1;
    send(control, out, (size_t)n, MSG_NOSIGNAL);
}

/* in C or R: say why the run could not start on the error pipe, and end */
static void fail(int error_w, const char *what) {
    char out[512];
    int n = snprintf(out, sizeof out, "warm start: %s: %s", what, strerror(errno));
    if (n > (int)sizeof out - 1) n = sizeof out - 1;
    if (write(error_w, out, (size_t)n) < 0) _exit(127);
    _exit(127);
}

static int write_text(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

static char *read_all(int fd, size_t *size, size_t cap) {
    struct stat st;
    if (fstat(fd, &st) || st.st_size < 0 || (size_t)st.st_size > cap) return NULL;
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) return NULL;
    size_t total = 0;
    while (total < (size_t)st.st_size) {
        ssize_t n = pread(fd, buf + total, (size_t)st.st_size - total, (off_t)total);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            free(buf);
            return NULL;
        }
        total += (size_t)n;
    }
    buf[total] = 0;
    *size = total;
    return buf;
}

struct request {
    int n_rlimits;
    long long rlimits[16][3];
    int argc;
    char *args[MAX_ARGS];
};
/* Every capability gone for good (bounding and ambient sets too), no_new_privs, then the run's
   filter: stacked on W's, the stricter answer wins, and the two deny what the cold one does. */
static void confine(int error_w) {
    for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) && errno != EINVAL) fail(error_w, "capbset");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)) fail(error_w, "ambient");
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &header, data)) fail(error_w, "capset");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) fail(error_w, "no_new_privs");
    if (!filter.len) { /* never a run without the filter, whatever W was given */
        errno = EINVAL;
        fail(error_w, "no seccomp filter");
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filter, 0, 0)) fail(error_w, "seccomp");
}

/* the run's rlimits, set in C before it forks R: both have them */
static void apply_rlimits(const struct request *req, int error_w) {
    for (int r = 0; r < req->n_rlimits; r++) {
        struct rlimit limit = {(rlim_t)req->rlimits[r][1], (rlim_t)req->rlimits[r][2]};
        if (req->rlimits[r][1] < 0) limit.rlim_cur = RLIM_INFINITY;
        if (req->rlimits[r][2] < 0) limit.rlim_max = RLIM_INFINITY;
        if (setrlimit((int)req->rlimits[r][0], &limit)) fail(error_w, "setrlimit");
    }
}


/* "N\0(res\0soft\0hard\0)*N argc\0arg*" */
static int parse(char *buf, size_t size, struct request *req) {
    char *p = buf, *end = buf + size;
#define NEXT(var)                           \
    do {                                    \
        if (p >= end) return -1;            \
        var = p;                            \
        p += strlen(p) + 1;                 \
    } while (0)
    char *item;
    NEXT(item);
    req->n_rlimits = atoi(item);
    if (req->n_rlimits < 0 || req->n_rlimits > 16) return -1;
    for (int r = 0; r < req->n_rlimits; r++)
        for (int k = 0; k < 3; k++) {
            NEXT(item);
            req->rlimits[r][k] = strtoll(item, NULL, 10);
        }
    NEXT(item);
    req->argc = atoi(item);
    if (req->argc < 0 || req->argc >= MAX_ARGS) return -1;
    for (int k = 0; k < req->argc; k++) NEXT(req->args[k]);
    return 0;
#undef NEXT
}

static int mount_tmpfs(const char *path) {
    return mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, TMPFS_OPTIONS);
}

/* as bwrap's --proc: what /proc holds of the host's (sysctls, sysrq, irq, bus) read-only; a
   missing one (a kernel without it) is no error */
static int protect_proc(void) {
    static const char *const parts[] = {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq",
                                        "/proc/bus"};
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        if (mount(parts[k], parts[k], NULL, MS_BIND | MS_REC, NULL)) {
            if (errno == ENOENT) continue;
            return -1;
        }
        if (mount(NULL, parts[k], NULL,
                  MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
            return -1;
    }
    return 0;
}

/* the source copied by the kernel: C runs on W's stack, and no byte of a run may stay there */
static void write_source(int source, int error_w) {
    int out = open("/box/main.py", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (out < 0) fail(error_w, "source");
    fchmod(out, 0666); /* as bwrap --file, whatever the umask */
    off_t at = 0;
    for (;;) {
        ssize_t n = sendfile(out, source, &at, 1 << 30);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail(error_w, "source");
        if (n == 0) break;
    }
    close(out);
}

/* flush_std_files of pylifecycle.c: -1 when stdout or stderr cannot be flushed */
static int flush_std_files(void) {
    int status = 0;
    const char *names[] = {"stdout", "stderr"};
    for (int k = 0; k < 2; k++) {
        PyObject *file = PySys_GetObject(names[k]); /* borrowed */
        if (file == NULL || file == Py_None) continue;
        PyObject *closed = PyObject_GetAttrString(file, "closed");
        int is_closed = closed != NULL && PyObject_IsTrue(closed) == 1;
        Py_XDECREF(closed);
        PyErr_Clear();
        if (is_closed) continue;
        PyObject *done = PyObject_CallMethod(file, "flush", NULL);
        if (done == NULL) {
            if (k == 0) PyErr_WriteUnraisable(file);
            else PyErr_Clear();
            status = -1;
        }
        Py_XDECREF(done);
    }
    return status;
}

/* The end of Py_RunMain: what Py_FinalizeEx does that a program can see, in its order (the
   threads joined, atexit handlers, the std streams flushed, garbage collected and __main__'s
   globals released, so that their __del__ run), then _exit. Not done: freeing every object of
   the interpreter, which no program sees and which in a fork copies most of the interpreter's
   pages (about 3 ms of a hello world's 6). sys.exit() ends through Py_Exit: the whole
   finalisation. */
static void finish(int exitcode) {
    PyObject *name = PyUnicode_FromString("threading");
    PyObject *threading = name ? PyImport_GetModule(name) : NULL;
    Py_XDECREF(name);
    if (threading != NULL) {
        PyObject *done = PyObject_CallMethod(threading, "_shutdown", NULL);
        if (done == NULL) PyErr_WriteUnraisable(threading);
        Py_XDECREF(done);
        Py_DECREF(threading);
    }
    PyErr_Clear();
    PyObject *atexit = PyImport_ImportModule("atexit");
    if (atexit != NULL) {
        PyObject *done = PyObject_CallMethod(atexit, "_run_exitfuncs", NULL);
        Py_XDECREF(done);
        Py_DECREF(atexit);
    }
    PyErr_Clear();
    if (flush_std_files() < 0) exitcode = 120;
    PyGC_Collect();
    PyObject *main_module = PyImport_AddModule("__main__"); /* borrowed */
    if (main_module != NULL) _PyModule_Clear(main_module);
    PyErr_Clear();
    PyGC_Collect();
    if (flush_std_files() < 0) exitcode = 120;
    if (_Py_UnhandledKeyboardInterrupt) { /* exit_sigint of main.c */
        signal(SIGINT, SIG_DFL);
        kill(getpid(), SIGINT);
    }
    _exit(exitcode);
}

/* flush_io of pythonrun.c: stderr and stdout flushed, the exception under way kept */
static void flush_io(void) {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    const char *names[] = {"stderr", "stdout"};
    for (int k = 0; k < 2; k++) {
        PyObject *file = PySys_GetObject(names[k]);
        PyObject *done = file && file != Py_None ? PyObject_CallMethod(file, "flush", NULL) : NULL;
        Py_XDECREF(done);
        PyErr_Clear();
    }
    PyErr_Restore(type, value, traceback);
}

/* pymain_run_python of main.c for -I /box/main.py (the importer looked up, and cached, for the
   file; the audit event), running the file as _PyRun_SimpleFileObject of pythonrun.c does
   (__file__, __cached__ and __loader__ in __main__, the file's code, the exception printed),
   but for one thing: a SystemExit ends through finish() too, where PyErr_Print would call
   Py_Exit, the whole finalisation */
static void run_main(void) {
    const char *path = PYTHON_ARGV[3];
    int exitcode = 1;
    PyObject *filename = PyUnicode_DecodeFSDefault(path);
    PyObject *importer = filename ? PyImport_GetImporter(filename) : NULL;
    if (importer == NULL || PySys_Audit("cpython.run_file", "O", filename) < 0) {
        PyErr_Print();
        finish(exitcode);
    }
    Py_DECREF(importer);
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        PySys_FormatStderr("%s: can't open file '%s': [Errno %d] %s\n", PYTHON_ARGV[0], path,
                           errno, strerror(errno));
        finish(2);
    }
    PyObject *main_module = PyImport_AddModule("__main__"); /* borrowed */
    PyObject *globals = main_module ? PyModule_GetDict(main_module) : NULL;
    PyObject *bootstrap = PyImport_ImportModule("_frozen_importlib_external");
    PyObject *loader = bootstrap ? PyObject_CallMethod(bootstrap, "SourceFileLoader", "sO",
                                                       "__main__", filename)
                                 : NULL;
    if (globals == NULL || loader == NULL ||
        PyDict_SetItemString(globals, "__file__", filename) < 0 ||
        PyDict_SetItemString(globals, "__cached__", Py_None) < 0 ||
        PyDict_SetItemString(globals, "__loader__", loader) < 0) {
        PyErr_Print();
        finish(exitcode);
    }
    Py_DECREF(loader);
    Py_DECREF(bootstrap);
    PyCompilerFlags flags = _PyCompilerFlags_INIT;
    PyObject *result = PyRun_FileExFlags(fp, path, Py_file_input, globals, globals, 1, &flags);
    flush_io();
    if (result != NULL) {
        exitcode = 0;
        Py_DECREF(result);
    } else if (!PyErr_ExceptionMatches(PyExc_SystemExit) || !_Py_HandleSystemExit(&exitcode)) {
        PyErr_Print();
        exitcode = 1;
    }
    if (PyDict_DelItemString(globals, "__file__")) PyErr_Clear();
    if (PyDict_DelItemString(globals, "__cached__")) PyErr_Clear();
    Py_DECREF(filename);
    finish(exitcode);
}

/* R: the run's program, pid 2 of its namespace. Waits for the byte its pid 1 sends once it is
   the small init, not dumpable (warm_init.c): none of the run's code runs while pid 1 shares
   W's memory. */
static void program(const struct request *req, int *fds, int error_w, int go) {
    char byte;
    ssize_t got;
    do got = read(go, &byte, 1);
    while (got < 0 && errno == EINTR);
    if (got != 1) _exit(127); /* pid 1 failed to become init: the run ends with it */
    close(go);
    for (int k = 0; k < 3; k++)
        if (dup2(fds[k], k) < 0) fail(error_w, "dup2");
    int err = fcntl(error_w, F_DUPFD_CLOEXEC, 3);
    if (err < 0 || (err > 3 && syscall(SYS_close_range, 3, err - 1, 0)) ||
        syscall(SYS_close_range, err + 1, ~0U, 0))
        fail(error_w, "close_range");
    error_w = err;
    if (chdir("/box")) fail(error_w, "chdir");
    prctl(PR_SET_NAME, "python3", 0, 0, 0);
    /* the rlimits, no capability and the filter come from C */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); /* as a cold run: its /proc/self is its own */
    close(error_w);                      /* W reads EOF: the run has started */

    PyOS_AfterFork_Child();
    PyObject *argv = PyList_New(0), *orig = PyList_New(0);
    for (size_t k = 0; k < sizeof PYTHON_ARGV / sizeof *PYTHON_ARGV; k++) {
        PyObject *item = PyUnicode_DecodeFSDefault(PYTHON_ARGV[k]);
        if (k == 3) PyList_Append(argv, item);
        PyList_Append(orig, item);
        Py_DECREF(item);
    }
    for (int k = 0; k < req->argc; k++) {
        PyObject *item = PyUnicode_DecodeFSDefault(req->args[k]);
        PyList_Append(argv, item);
        PyList_Append(orig, item);
        Py_DECREF(item);
    }
    PySys_SetObject("argv", argv);
    PySys_SetObject("orig_argv", orig);
    Py_DECREF(argv);
    Py_DECREF(orig);
    PyObject *globals = PyDict_New();
    PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins());
    PyObject *done = PyEval_EvalCode(stdio_code, globals, globals);
    if (done == NULL) {
        PyErr_Print();
        _exit(120);
    }
    Py_DECREF(done);
    Py_DECREF(globals);
    run_main();
}

struct run_setup {
    const struct request *req;
    int *fds;
    int error_r, error_w;
    int report_r, report_w; /* init's word on the program's peak memory */
};

/* C: the run's pid 1, a vfork child of W in W's memory (W waits until C executes init or
   ends), on W's stack below W's frames. Sets the namespaces up, forks R, and becomes
   warm_init, which reaps and exits as R did. Whatever C writes is W's: the mm's dumpable flag
   (W sets it back), the stack (W discards it), never a byte of the run's source or request
   beyond the stack. */
static int set_up_run(void *arg) {
    const struct run_setup *run = arg;
    const struct request *req = run->req;
    int *fds = run->fds, error_w = run->error_w;
    close(run->error_r);
    close(run->report_r);
    close(control);
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* W's memory is not dumpable: its /proc files would be root's, and the maps below could
       not be written. Not dumpable again before R exists. */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    char map[64];
    snprintf(map, sizeof map, "%d %d 1", SANDBOX_ID, SANDBOX_ID);
    if (write_text("/proc/self/setgroups", "deny") || write_text("/proc/self/uid_map", map) ||
        write_text("/proc/self/gid_map", map))
        fail(error_w, "id maps");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) fail(error_w, "private mounts");
    if (mount_tmpfs("/tmp") || mount_tmpfs("/box")) fail(error_w, "tmpfs");
    struct stat shm;
    if (lstat("/dev/shm", &shm) == 0 && S_ISDIR(shm.st_mode) && mount_tmpfs("/dev/shm"))
        fail(error_w, "tmpfs /dev/shm");
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
        fail(error_w, "proc");
    write_source(fds[3], error_w);
    /* C's cwd was W's, which the program could reach as /proc/1/cwd */
    if (chdir("/")) fail(error_w, "chdir");
    if (write_text("/proc/self/oom_score_adj", "1000")) fail(error_w, "oom_score_adj");
    /* as bwrap's --disable-userns: the run's user namespace may hold no other, should the
       filter ever let one be made (only C, holding CAP_SYS_RESOURCE here, may raise it) */
    if (write_text("/proc/sys/user/max_user_namespaces", "0")) fail(error_w, "max_user_namespaces");
    if (protect_proc()) fail(error_w, "read-only /proc/sys");
    if (setsid() < 0) fail(error_w, "setsid");
    /* C is held as R will be before any of R's code runs: the run's rlimits (C does nothing but
       wait), no capability, no_new_privs, the run's filter; and not dumpable, for good */
    apply_rlimits(req, error_w);
    confine(error_w);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    int go[2];
    if (pipe2(go, O_CLOEXEC)) fail(error_w, "pipe");
    pid_t pid = fork(); /* a copy of W's memory: the only one a run makes */
    if (pid < 0) fail(error_w, "fork");
    if (pid == 0) {
        close(go[1]);
        program(req, fds, error_w, go[0]);
    }
    close(go[0]);
    /* the run's pipes, the error pipe and the control socket are close-on-exec: init holds
       only these two */
    if (dup2(go[1], 0) < 0 || dup2(run->report_w, 1) < 0) fail(error_w, "dup2");
    char pid_text[16];
    snprintf(pid_text, sizeof pid_text, "%d", (int)pid);
    char *const init_argv[] = {"livecode-init", pid_text, NULL};
    char *const init_env[] = {NULL};
    execve(INIT_PATH, init_argv, init_env);
    fail(error_w, "exec " INIT_PATH);
    return 127;
}

/* C's stack: W's own, this far below W's frames (W waits in clone meanwhile), so that R, a
   fork of C, runs on the main stack as a cold python does, growing up to its RLIMIT_STACK */
#define C_STACK_GAP (16 << 10)
/* more than C ever uses: discarded after each run, so that no later run's copy holds it */
#define C_STACK_BYTES (256 << 10)

/* an address below every frame of the caller's (and so below its locals) */
static __attribute__((noinline)) uintptr_t below_caller(void) {
    return (uintptr_t)__builtin_frame_address(0);
}

static void forget_c_stack(uintptr_t top) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    /* top's own page too, where C's first frames are: W's are C_STACK_GAP above it */
    uintptr_t end = (top + page - 1) & ~(page - 1), start = (top - C_STACK_BYTES) & ~(page - 1);
    /* pages of the range never touched are no error worth a word: ENOMEM, the rest zapped */
    madvise((void *)start, end - start, MADV_DONTNEED);
}

static void run(int *fds, int n_fds) {
    struct request req;
    size_t size = 0;
    char *buf = n_fds == N_FDS ? read_all(fds[4], &size, MAX_REQUEST) : NULL;
    if (!buf || parse(buf, size, &req)) {
        reply("error malformed request");
        if (buf) explicit_bzero(buf, size);
        free(buf);
        return;
    }
    int pipe_fds[2], report[2];
    if (pipe2(pipe_fds, O_CLOEXEC)) {
        reply("error pipe: %s", strerror(errno));
        explicit_bzero(buf, size);
        free(buf);
        return;
    }
    /* never waited on: read once init and every process of the run are gone */
    if (pipe2(report, O_CLOEXEC | O_NONBLOCK)) {
        reply("error pipe: %s", strerror(errno));
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        explicit_bzero(buf, size);
        free(buf);
        return;
    }
    struct run_setup setup = {&req, fds, pipe_fds[0], pipe_fds[1], report[0], report[1]};
    uintptr_t stack_top = (below_caller() - C_STACK_GAP) & ~(uintptr_t)63;
    PyOS_BeforeFork();
    pid_t pid = clone(set_up_run, (void *)stack_top,
                      CLONE_VM | CLONE_VFORK | CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID |
                          CLONE_NEWIPC | SIGCHLD,
                      &setup);
    /* C, sharing this memory, made it dumpable for a while, and may have ended before it set
       it back */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    forget_c_stack(stack_top);
    PyOS_AfterFork_Parent();
    /* every later run is a fork of this memory: nothing of this one may stay in it */
    explicit_bzero(buf, size);
    explicit_bzero(&req, sizeof req);
    free(buf);
    close(pipe_fds[1]);
    close(report[1]);
    if (pid < 0) {
        close(pipe_fds[0]);
        close(report[0]);
        reply("error clone: %s", strerror(errno));
        return;
    }
    char error[1024];
    ssize_t got;
    do got = read(pipe_fds[0], error, sizeof error - 1);
    while (got < 0 && errno == EINTR);
    close(pipe_fds[0]);
    if (got > 0) {
        error[got] = 0;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(report[0]);
        reply("error %s", error);
        explicit_bzero(error, sizeof error);
        return;
    }
    reply("pid %d", (int)pid);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct pollfd polls[2] = {{control, POLLIN, 0}, {pidfd, POLLIN, 0}};
    char msg[64];
    while (pidfd >= 0) {
        if (poll(polls, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (polls[0].revents) {
            ssize_t n = recv(control, msg, sizeof msg, 0);
            if (n <= 0) {
                kill(pid, SIGKILL); /* the spawner is gone: so are we, once C is reaped */
                polls[0].fd = -1;
                control = -1;
            } else if (n == 4 && memcmp(msg, "kill", 4) == 0) {
                kill(pid, SIGKILL); /* C is pid 1: its death ends every process of the run */
            }
        }
        if (polls[1].revents) break;
    }
    if (pidfd >= 0) close(pidfd);
    int status = 0;
    struct rusage usage;
    memset(&usage, 0, sizeof usage);
    while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {}
    /* C's own peak is this memory's, which the kernel recorded when C executed init: the
       program's is init's word, when init lived to say it (not when killed: a cancel, a
       timeout) */
    long maxrss = usage.ru_maxrss, reported = 0;
    if (read(report[0], &reported, sizeof reported) == (ssize_t)sizeof reported && reported >= 0)
        maxrss = reported;
    close(report[0]);
    if (control < 0) _exit(0);
    reply("exit %d %lld %lld %ld", status,
          (long long)usage.ru_utime.tv_sec * 1000000 + usage.ru_utime.tv_usec,
          (long long)usage.ru_stime.tv_sec * 1000000 + usage.ru_stime.tv_usec, maxrss);
}

/* How a run ended (the exit reply, formatted below run()'s frame, and the kernel's rusage and
   status in that frame) is none of a later run's business. No later run overwrites it: its C
   starts C_STACK_GAP below run()'s frame, and R is a copy of this stack. So every byte from
   here down to C's stack, which forget_c_stack discards, is zeroed. */
static void forget_replies(void) {
    char stack[sizeof(struct request) + C_STACK_GAP + (8 << 10)];
    explicit_bzero(stack, sizeof stack);
    __asm__ volatile("" : : "r"(stack) : "memory");
}

static int initialize(void) {
    PyStatus status;
    PyPreConfig preconfig;
    PyPreConfig_InitPythonConfig(&preconfig);
    int argc = sizeof PYTHON_ARGV / sizeof *PYTHON_ARGV;
    status = Py_PreInitializeFromBytesArgs(&preconfig, argc, (char **)PYTHON_ARGV);
    if (PyStatus_Exception(status)) return -1;
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    status = PyConfig_SetBytesArgv(&config, argc, (char **)PYTHON_ARGV);
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) return -1;
    stdio_code = Py_CompileString(STDIO, "<string>", Py_file_input);
    if (stdio_code == NULL) return -1;
    /* what the interpreter holds now is never garbage: no run's collection need visit (and so
       copy) its pages. gc leaves sys.modules again, as a fresh interpreter has not imported it */
    PyObject *gc = PyImport_ImportModule("gc");
    PyObject *done = gc ? PyObject_CallMethod(gc, "freeze", NULL) : NULL;
    Py_XDECREF(done);
    Py_XDECREF(gc);
    PyDict_DelItemString(PyImport_GetModuleDict(), "gc");
    if (PyErr_Occurred()) return -1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    control = atoi(argv[1]);
    int filter_fd = atoi(argv[2]);
    if (fcntl(control, F_SETFD, FD_CLOEXEC)) return 2;
    size_t size = 0;
    char *bpf = read_all(filter_fd, &size, 1 << 20);
    close(filter_fd);
    /* more than BPF_MAXINSNS would wrap the unsigned short length, to 0 among others */
    size_t n_insns = size / sizeof(struct sock_filter);
    if (!bpf || size % sizeof(struct sock_filter) || n_insns > BPF_MAXINSNS) return 2;
    filter.len = (unsigned short)n_insns;
    filter.filter = (struct sock_filter *)bpf;
    /* same-uid processes may not ptrace W nor read its /proc files */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    /* W's cwd is / (nothing of W's may be a run's), a run's is /box, as cold: bwrap's PWD said
       W's; os.environ is made from this one */
    if (setenv("PWD", "/box", 1)) return 2;
    if (initialize()) return 1;
    reply("ready");
    for (;;) {
        char msg[16];
        char cbuf[CMSG_SPACE(sizeof(int) * N_FDS)];
        struct iovec iov = {msg, sizeof msg};
        struct msghdr header = {0};
        header.msg_iov = &iov;
        header.msg_iovlen = 1;
        header.msg_control = cbuf;
        header.msg_controllen = sizeof cbuf;
        ssize_t n = recvmsg(control, &header, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0; /* the spawner is gone */
        int fds[N_FDS], n_fds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&header); c; c = CMSG_NXTHDR(&header, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int *data = (int *)CMSG_DATA(c);
            for (int k = 0; k < count; k++) {
                if (n_fds < N_FDS) fds[n_fds++] = data[k];
                else close(data[k]);
            }
        }
        if (n == 3 && memcmp(msg, "run", 3) == 0) run(fds, n_fds);
        /* a kill the spawner relayed as the run ended (a cancel that met the exit): its run is
           gone, and an answer would be read as the next run's */
        else if (n == 4 && memcmp(msg, "kill", 4) == 0 && n_fds == 0) {}
        else reply("error unknown request");
        forget_replies();
        for (int k = 0; k < n_fds; k++) close(fds[k]);
    }
}
