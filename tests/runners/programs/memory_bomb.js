const keep = [];
for (;;) keep.push(new Array(1 << 20).fill({ a: Math.random() }));
