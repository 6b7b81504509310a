# Fills the memory cgroup with tmpfs pages (/tmp, /dev/shm) in 15 MiB files: pages that belong
# to no process's RSS, so the OOM killer has to pick some process of the cgroup.
import time

chunk = b"A" * (1 << 20)
total = 0
try:
    for index in range(4096):
        with open(f"/dev/shm/fill-{index}" if index % 2 else f"/tmp/fill-{index}", "wb") as out:
            for _ in range(15):
                out.write(chunk)
                out.flush()
                total += 1
except OSError as exc:
    print(f"write stopped: {exc.strerror} after {total} MiB", flush=True)
print(f"filled {total} MiB, still alive", flush=True)
time.sleep(3)
