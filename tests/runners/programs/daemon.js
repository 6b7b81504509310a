const { spawn } = require("child_process");
const child = spawn("/usr/bin/sleep", ["1000"], { detached: true, stdio: "ignore" });
child.unref();
console.log("parent done");
