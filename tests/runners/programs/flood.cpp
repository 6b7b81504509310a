#include <iostream>
int main() { for (long i = 0;; i++) std::cout << "line " << i << " ✓\n"; }
