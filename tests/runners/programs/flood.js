let i = 0;
for (;;) { console.log(`line ${i} ✓`); i++; }
