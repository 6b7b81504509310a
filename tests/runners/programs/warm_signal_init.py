"""Signals the run's pid 1 with everything that would stop, end or confuse a process, then
says what pid 1's state is and ends with 7: pid 1 of its own PID namespace, it ignores them all
and still reports the program's end."""

import os
import signal

sent = []
for number in (
    signal.SIGSTOP,
    signal.SIGTSTP,
    signal.SIGTERM,
    signal.SIGKILL,
    signal.SIGSEGV,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGPIPE,
    signal.SIGCHLD,
    signal.SIGXCPU,
):
    os.kill(1, number)
    sent.append(number.name)
with open("/proc/1/status") as status:
    state = next(line for line in status if line.startswith("State:"))
print(len(sent), state.split()[1], flush=True)
os._exit(7)
