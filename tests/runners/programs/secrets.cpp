#include <dirent.h>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
int main(int argc, char** argv) {
    for (int a = 1; a < argc; a++) {
        if (DIR* d = opendir(argv[a])) { std::printf("%s LISTED\n", argv[a]); closedir(d); continue; }
        if (FILE* f = std::fopen(argv[a], "rb")) {
            char buf[200]; size_t n = std::fread(buf, 1, sizeof buf, f);
            std::printf("%s READ %.*s\n", argv[a], (int)n, buf); std::fclose(f);
        } else std::printf("%s denied: %s\n", argv[a], std::strerror(errno));
    }
    int n = 0; DIR* d = opendir("/proc");
    while (dirent* e = readdir(d)) if (std::isdigit(e->d_name[0])) n++;
    std::printf("processes: %d\n", n);
}
