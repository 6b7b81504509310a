"""What the run's pid 1 (warm_init.c, which the process that set the run up became) looks like
to the program: its limits, capabilities and filters, its size, and whether the program can
write its memory."""

import json
import os


def status(pid: str) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as lines:
        return dict(line.rstrip("\n").split(":\t", 1) for line in lines if ":\t" in line)


def limits(pid: str) -> list[str]:
    with open(f"/proc/{pid}/limits") as lines:
        return [" ".join(line.split()) for line in lines]


fields = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
fields += ("Seccomp_filters",)
reached = []
for path, mode in (("/proc/1/mem", os.O_RDWR), ("/proc/1/cwd", os.O_RDONLY)):
    try:
        os.close(os.open(path, mode))
        reached.append(path)
    except OSError:
        pass
print(
    json.dumps(
        {
            "limits": [limits("1"), limits("self")],
            "status": [{name: status(pid).get(name) for name in fields} for pid in ("1", "self")],
            "reached": reached,
            "init_rss_kb": int(status("1")["VmRSS"].split()[0]),
        }
    )
)
