import os
import sys

for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            print(path, "LISTED", os.listdir(path)[:5])
        else:
            print(path, "READ", open(path, "rb").read()[:200])
    except OSError as exc:
        print(path, "denied:", exc.strerror)
pids = [p for p in os.listdir("/proc") if p.isdigit()]
print("processes:", len(pids))
