let i = 0;
const t = setInterval(() => { console.log("tick", i); if (++i === 4) clearInterval(t); }, 250);
