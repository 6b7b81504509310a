// Lists the file descriptors this program inherited (all but the listing's own fd).
#include <dirent.h>
#include <cstdio>
#include <cstdlib>
#include <set>

int main() {
    DIR* dir = opendir("/proc/self/fd");
    if (!dir) return 1;
    std::set<int> fds;
    while (dirent* entry = readdir(dir)) {
        if (entry->d_name[0] == '.') continue;
        int fd = std::atoi(entry->d_name);
        if (fd != dirfd(dir)) fds.insert(fd);
    }
    closedir(dir);
    std::printf("fds:");
    for (int fd : fds) std::printf(" %d", fd);
    std::printf("\n");
}
