#include <chrono>
#include <iostream>
#include <thread>
int main() {
    for (int i = 0; i < 4; i++) {
        std::cout << "tick " << i << '\n';
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
}
