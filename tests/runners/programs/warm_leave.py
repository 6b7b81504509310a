"""Leaves behind everything it can for the next run of the same warm interpreter to find."""

import atexit
import builtins
import os
import signal
import sys
import threading
import time

for path in ("/tmp/left", "/box/left", "/dev/shm/left"):
    with open(path, "w") as out:
        out.write("left")
# pid 1's working directory and root, should either be a directory the next run could see
for path in ("/proc/1/cwd/left", "/proc/1/root/left", "/proc/1/root/tmp/left_root"):
    try:
        with open(path, "w") as out:
            out.write("left")
    except OSError:
        pass
os.environ["LEFT"] = "1"
os.putenv("LEFT_PUT", "1")
sys.modules["left_module"] = type(sys)("left_module")
import json  # noqa: E402,F401 - a module a fresh interpreter has not imported

builtins.print_left = print
builtins.len = lambda _: 42
sys.path.append("/tmp/left_path")
sys.setrecursionlimit(77)
atexit.register(lambda: os.write(1, b"atexit of the leaving run\n"))
signal.signal(signal.SIGTERM, lambda *_: None)
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
if os.fork() == 0:  # a daemon in a session of its own, sleeping on after the run
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
print("left", flush=True)
