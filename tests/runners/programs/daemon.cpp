#include <cstdio>
#include <unistd.h>
int main() {
    if (fork() == 0) { setsid(); if (fork() == 0) { close(1); close(2); sleep(1000); } _exit(0); }
    std::printf("parent done\n");
}
