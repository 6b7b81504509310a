const net = require("net");
const targets = [["127.0.0.1", Number(process.argv[2])], ["1.1.1.1", 80]];
for (const [host, port] of targets) {
  const s = net.connect({ host, port, timeout: 2000 });
  s.on("connect", () => { console.log(host, "CONNECTED"); s.destroy(); });
  s.on("error", (e) => console.log(host, "blocked:", e.code));
  s.on("timeout", () => { console.log(host, "blocked: timeout"); s.destroy(); });
}
