const fs = require("fs");
for (const path of process.argv.slice(2)) {
  try {
    const fd = fs.openSync(path, "w");
    const block = Buffer.alloc(1 << 20, 120);
    for (let i = 0; i < 1024; i++) fs.writeSync(fd, block);
    console.log(path, "wrote 1 GiB");
  } catch (e) { console.log(path, "stopped:", e.code); }
}
