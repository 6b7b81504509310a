#include <arpa/inet.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char** argv) {
    const char* hosts[] = {"127.0.0.1", "1.1.1.1"};
    int ports[] = {std::atoi(argv[1]), 80};
    for (int i = 0; i < 2; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) { std::printf("%s blocked: %s\n", hosts[i], std::strerror(errno)); continue; }
        sockaddr_in a{}; a.sin_family = AF_INET; a.sin_port = htons(ports[i]);
        inet_pton(AF_INET, hosts[i], &a.sin_addr);
        if (connect(fd, (sockaddr*)&a, sizeof a) == 0) std::printf("%s CONNECTED\n", hosts[i]);
        else std::printf("%s blocked: %s\n", hosts[i], std::strerror(errno));
        close(fd);
    }
}
