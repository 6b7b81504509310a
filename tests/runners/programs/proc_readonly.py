# What /proc holds of the host (sysctls, sysrq) must not be writable: try to open a few for
# writing (opening writes nothing) and print what happened. (ns_last_pid is left out: it is
# 0666 by design, and a write of it checks for a capability no run has.)
for path in (
    "/proc/sysrq-trigger",
    "/proc/sys/vm/drop_caches",
    "/proc/sys/kernel/hostname",
    "/proc/sys/user/max_user_namespaces",
    "/proc/sys/kernel/shmmax",
):
    try:
        open(path, "w").close()
    except OSError as exc:
        print(path, "refused", type(exc).__name__)
    else:
        print(path, "WRITABLE")
