// The drawings of a performance report (its data is inlined as DATA).
"use strict";
(function () {
  function color(op) { let h = 2166136261; for (const c of String(op)) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0; h = Math.imul(h ^ (h >>> 15), 2246822507) >>> 0; return `hsl(${h % 360},62%,52%)`; }
  const [t0, t1] = DATA.span; const span = Math.max(t1 - t0, 1);
  const c = document.getElementById("stream"), ctx = c.getContext("2d");
  const workers = [...new Set(DATA.events.map(e => e.worker ?? e.to))].sort((a, b) => a - b);
  const rowH = Math.max(8, Math.min(30, (c.height - 10) / Math.max(workers.length, 1)));
  const x = t => 60 + (t - t0) / span * (c.width - 70);
  ctx.font = "11px sans-serif";
  workers.forEach((w, i) => { ctx.fillStyle = "#6b7080"; ctx.fillText("worker " + w, 2, i * rowH + rowH / 2 + 4); });
  let drawn = 0;
  for (const e of DATA.events) {
    const row = workers.indexOf(e.worker ?? e.to);
    if (e.kind === "task") { ctx.fillStyle = color(DATA.ops[e.op]); ctx.fillRect(x(e.start_ms), row * rowH + 1, Math.max(1, x(e.end_ms) - x(e.start_ms)), rowH - 2); }
    else { ctx.fillStyle = e.kind === "failed" ? "#d64545" : e.kind === "transfer" ? "#e0245e" : "#e09a2b"; ctx.fillRect(x(e.at_ms), row * rowH, 2, rowH); }
    drawn++;
  }
  c.dataset.bars = drawn;
  const m = document.getElementById("memory"), mx = m.getContext("2d");
  const names = [...new Set(DATA.memory.flatMap(s => Object.keys(s.workers)))];
  const max = Math.max(1, ...DATA.memory.flatMap(s => Object.values(s.workers)));
  const ts = DATA.memory.map(s => s.t), m0 = Math.min(...ts), m1 = Math.max(...ts, m0 + 1);
  names.forEach((n, i) => {
    mx.strokeStyle = color(n); mx.beginPath();
    DATA.memory.forEach((s, k) => { const px = 60 + (s.t - m0) / (m1 - m0) * (m.width - 70), py = m.height - 10 - (s.workers[n] || 0) / max * (m.height - 20); k ? mx.lineTo(px, py) : mx.moveTo(px, py); });
    mx.stroke(); mx.fillStyle = color(n); mx.fillText(n, 2, 14 + i * 14);
  });
})();
