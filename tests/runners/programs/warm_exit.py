"""Ends as the first argument says, after leaving work for the interpreter's end: a global whose
__del__ prints, an atexit handler, a thread still running, an unclosed buffered file."""

import atexit
import sys
import threading
import time


class Noisy:
    def __del__(self):
        print("__del__ of a global", flush=True)


noisy = Noisy()
atexit.register(print, "atexit handler")
stdout = open(1, "w", closefd=False)  # buffered: written out when it is freed
stdout.write("unclosed buffered file\n")


def late():
    time.sleep(0.2)
    print("thread joined at exit", flush=True)


threading.Thread(target=late).start()
how = sys.argv[1]
print("ending by", how, flush=True)
if how == "exit":
    sys.exit(3)
if how == "message":
    sys.exit("a message")
if how == "exception":
    raise ValueError("uncaught")
if how == "interrupt":
    raise KeyboardInterrupt
