import os
import signal

for target in (os.getppid(), 1, -1):
    try:
        os.kill(target, signal.SIGKILL)
        print(target, "signalled")
    except OSError as exc:
        print(target, "denied:", exc.strerror)
print("still alive")
