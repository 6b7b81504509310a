/* The pid 1 of a warm run (warm.c): what its set-up process C becomes once it has forked the
   program R. C sets the run up as a vfork child sharing the warm interpreter's memory (no copy
   of it made for C), then executes this program, so that the run's pid 1 holds no copy of the
   interpreter and the kernel neither copies nor tears one down for it.

   No libc: a static glibc program spends about 0.25 ms of CPU starting, this one 0.04 ms
   (perf stat, the exec included). x86-64 Linux only, as warm.c is.

   argv: R's pid; fd 0: the pipe R waits on; fd 1: a pipe to W. Not dumpable first: R, of the
   same uid, must not write this process's memory nor open its /proc files, and starts only once
   it reads the byte sent here after that. Then every other fd closed (the run's pipes among
   them: their readers wait for every writer), and it only reaps. When R ends, it tells W the
   peak memory (KiB) of what it reaped (R, and R's own reaped children, and orphans), which this
   process's rusage cannot say (it holds W's, recorded at exec), and exits as R did (a signal N
   as 128+N, as bwrap's init reports it). */

#include <linux/prctl.h>
#include <linux/resource.h>
#include <linux/wait.h>
#include <asm/unistd.h>

#define EINTR 4

static long syscall4(long number, long a, long b, long c, long d) {
    long result;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return result;
}

static __attribute__((noreturn)) void leave(int code) {
    for (;;) syscall4(__NR_exit_group, code, 0, 0, 0);
}

static long parse_pid(const char *text) {
    long value = 0;
    if (!*text) return -1;
    for (; *text; text++) {
        if (*text < '0' || *text > '9' || value > 1 << 22) return -1;
        value = value * 10 + (*text - '0');
    }
    return value;
}

__attribute__((noreturn, used)) void start(long *stack) {
    if (syscall4(__NR_prctl, PR_SET_DUMPABLE, 0, 0, 0)) leave(127);
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    long program = argc == 2 ? parse_pid(argv[1]) : -1;
    if (program <= 0) leave(127);
    if (syscall4(__NR_write, 0, (long)"", 1, 0) != 1) leave(127);
    if (syscall4(__NR_close, 0, 0, 0, 0) || syscall4(__NR_close_range, 2, ~0U, 0, 0)) leave(127);
    long peak_kib = 0;
    for (;;) {
        int status = 0;
        struct rusage usage;
        usage.ru_maxrss = 0;
        long ended = syscall4(__NR_wait4, -1, (long)&status, 0, (long)&usage);
        if (ended == -EINTR) continue;
        if (ended < 0) leave(127);
        if (usage.ru_maxrss > peak_kib) peak_kib = usage.ru_maxrss;
        if (ended != program) continue; /* an orphan of the run */
        syscall4(__NR_write, 1, (long)&peak_kib, sizeof peak_kib, 0);
        if ((status & 0x7f) == 0) leave((status >> 8) & 0xff); /* exited */
        leave(128 + (status & 0x7f));                           /* killed by a signal */
    }
}

__asm__(".text\n.global _start\n_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call start\n"
        "  hlt\n");
