// Fills the memory cgroup with memfd pages in 15 MiB files (under RLIMIT_FSIZE): pages that
// belong to no process's RSS, so the OOM killer has to pick some process of the cgroup.
#include <sys/mman.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>

int main() {
    static char buf[1 << 20];
    std::memset(buf, 'A', sizeof buf);
    int fd = -1;
    long in_file = 0, total = 0;
    for (int i = 0; i < 4096; i++) {
        if (fd < 0 || in_file == 15) {
            fd = memfd_create("fill", 0);
            in_file = 0;
        }
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) {
            std::printf("write stopped: %s after %ld MiB\n", std::strerror(errno), total);
            break;
        }
        in_file++;
        total++;
    }
    std::printf("filled %ld MiB, still alive\n", total);
    std::fflush(stdout);
    sleep(3);
}
