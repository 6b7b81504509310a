#include <cstdio>
#include <vector>
int main(int argc, char** argv) {
    std::vector<char> block(1 << 20, 'x');
    for (int a = 1; a < argc; a++) {
        FILE* f = std::fopen(argv[a], "wb");
        for (int i = 0; i < 1024; i++) std::fwrite(block.data(), 1, block.size(), f);
        std::fclose(f);
        std::printf("%s wrote 1 GiB\n", argv[a]);
    }
}
