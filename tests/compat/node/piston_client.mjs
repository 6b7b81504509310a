// npm's piston-client, unchanged, against the livecode server given as the first argument.
// Prints one JSON object: each call's answer, as the client returned it.
import piston from "piston-client";

const client = piston({ server: process.argv[2] });
const results = {};
results.runtimes = await client.runtimes();
results.python = await client.execute(
  "python",
  "import sys\nprint(input(), sys.argv[1:])",
  { stdin: "hello" },
);
results.javascript = await client.execute(
  "javascript",
  "console.log(process.argv.slice(2).join('+'))",
);
results.cpp = await client.execute({
  language: "c++",
  files: [{ name: "main.cpp", content: "#include <iostream>\nint main() { std::cout << \"cpp\" << std::endl; }" }],
  args: [],
});
results.timeout = await client.execute("python", "while True: pass", { runTimeout: 500 });
results.memory = await client.execute("python", "print('small')", { runMemoryLimit: 64000000 });
results.unknown = await client.execute("cobol", "DISPLAY 'x'.");
process.stdout.write(JSON.stringify(results));
