// What a new session starts with, per language id of GET /languages.
export const TEMPLATES = {
  python: `# Python: press Run (Ctrl+Enter). input() reads the Input box.
import time

for i in range(3):
    print(f"hello {i}")
    time.sleep(0.3)
`,
  javascript: `// JavaScript (Node.js): press Run (Ctrl+Enter).
for (let i = 0; i < 3; i++) {
  console.log(\`hello \${i}\`);
}
`,
  "c++": `// C++ (g++): press Run (Ctrl+Enter).
#include <iostream>

int main() {
    for (int i = 0; i < 3; i++) {
        std::cout << "hello " << i << '\\n';
    }
}
`,
};

export function isTemplate(source) {
  return !source.trim() || Object.values(TEMPLATES).includes(source);
}
