"""Prints what a program can see of its interpreter and process, as JSON: the same, warm or cold."""

import os
import sys

modules = sorted(sys.modules)  # before this program imports anything more
import json  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402

status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines())
limits = ("CPU", "FSIZE", "NOFILE", "AS", "CORE", "STACK", "MEMLOCK")
state = {
    "modules": modules,
    "path": sys.path,
    "flags": str(sys.flags),
    "executable": [sys.executable, sys.prefix, sys.exec_prefix, sys.base_prefix],
    "argv": [sys.argv, sys.orig_argv],
    "main": [__name__, __file__, type(__loader__).__name__, __spec__, __doc__, __cached__],
    "environ": dict(os.environ),
    "cwd": [os.getcwd(), os.listdir("."), os.listdir("/tmp"), os.listdir("/dev/shm")],
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()],
    "process": [os.getpid(), os.getppid(), os.getsid(0), os.getpgrp(), os.umask(0o22)],
    "status": {
        key: status[key]
        for key in (
            "Uid",
            "Gid",
            "Groups",
            "CapInh",
            "CapPrm",
            "CapEff",
            "CapBnd",
            "CapAmb",
            "NoNewPrivs",
            "Seccomp",
        )
    },
    "comm": open("/proc/self/comm").read(),
    "oom_score_adj": open("/proc/self/oom_score_adj").read(),
    "rlimits": [resource.getrlimit(getattr(resource, f"RLIMIT_{name}")) for name in limits],
    "signals": [
        str(signal.getsignal(number))
        for number in signal.valid_signals()
        if number not in (signal.SIGKILL, signal.SIGSTOP)
    ],
    "blocked": sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "stdio": [
        [
            s.name,
            s.mode,
            s.encoding,
            s.errors,
            s.line_buffering,
            s.write_through,
            s.seekable(),
            s.isatty(),
            type(s.buffer).__name__,
            s.fileno(),
        ]
        for s in (sys.stdin, sys.stdout, sys.stderr)
    ],
    "stdin": sys.stdin.read(),
    "hostname": os.uname().nodename,
    "recursion": sys.getrecursionlimit(),
}
print(json.dumps(state, sort_keys=True, default=repr))
