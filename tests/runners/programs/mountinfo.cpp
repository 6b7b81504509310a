// Print the mount table the sandbox shows: host paths in it tell a program where it runs.
#include <fstream>
#include <iostream>
int main() {
    std::ifstream table("/proc/self/mountinfo");
    std::cout << table.rdbuf();
}
