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
# what pid 1 holds (its memory, fds, environment, namespaces, files) is shut to a program of its
# uid because it is not dumpable, and what it is (name, oom score, core filter) it cannot change
shut = "mem environ maps smaps auxv stack syscall pagemap io timers personality exe cwd root fd"
for name in (shut + " fdinfo map_files ns/user ns/pid ns/mnt").split():
    try:
        os.close(os.open(f"/proc/1/{name}", os.O_RDONLY))
        reached.append(f"read {name}")
    except OSError:
        pass
for name, value in (
    ("mem", "\0"),
    ("comm", "x"),
    ("oom_score_adj", "1000"),
    ("coredump_filter", "0"),
    ("clear_refs", "5"),
    ("timerslack_ns", "1"),
):
    try:
        with open(f"/proc/1/{name}", "w") as file:
            file.write(value)
        reached.append(f"wrote {name}")
    except OSError:
        pass
with open("/proc/1/cmdline", "rb") as cmdline:
    init_cmdline = cmdline.read().decode()
print(
    json.dumps(
        {
            "limits": [limits("1"), limits("self")],
            "status": [{name: status(pid).get(name) for name in fields} for pid in ("1", "self")],
            "reached": reached,
            "init_rss_kb": int(status("1")["VmRSS"].split()[0]),
            "init_cmdline": init_cmdline,
        }
    )
)
