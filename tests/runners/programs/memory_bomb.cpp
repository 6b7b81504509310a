#include <cstring>
#include <vector>
int main() {
    std::vector<char*> keep;
    for (;;) { char* p = new char[8 << 20]; std::memset(p, 1, 8 << 20); keep.push_back(p); }
}
