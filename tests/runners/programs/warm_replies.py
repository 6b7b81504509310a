"""Scans every readable byte of its own memory (a copy of the warm interpreter's) for the
interpreter's replies to its spawner: "exit STATUS UTIME_US STIME_US MAXRSS_KIB" is an earlier
run's end (this run has not ended yet). Prints found: [...]."""

import re

found = []
with open("/proc/self/mem", "rb") as mem, open("/proc/self/maps") as maps:
    for line in maps:
        span, perms = line.split()[:2]
        if "r" not in perms or line.rstrip().endswith(("[vvar]", "[vsyscall]")):
            continue
        start, end = (int(x, 16) for x in span.split("-"))
        try:
            mem.seek(start)
            data = mem.read(end - start)
        except OSError:
            continue
        found += [hit.decode() for hit in re.findall(rb"exit -?[0-9]+ [0-9]+ [0-9]+ [0-9]+", data)]
print("found:", found)
