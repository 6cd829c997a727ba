// Weft dashboard: one script for every page. It listens to /api/events
// (server-sent events, one message per scheduler observation) and redraws
// the page shown. Everything heavy is aggregated by the server; the task
// stream keeps at most MAX_BARS bars.
"use strict";

const MAX_BARS = 20000;
const LABEL_FONT = "11px system-ui, sans-serif";
const LABEL_H = 13;            // px between two worker labels in the task stream, at least
const STATES = ["memory", "processing", "queued", "waiting", "erred", "released"];
const page = (location.pathname.replace(/^\//, "") || "status");
let state = null;           // latest /api/state
let bars = [];              // task stream: {w, op, s, e, lane, kind}
let transfers = [];         // {from, to, bytes, at}
let lanes = new Map();      // worker id -> array of lane end times
let thinned = 1;
let clockSkew = 0;          // server time - browser time, ms
let panMs = 0;              // how far the stream view is scrolled back
let dirty = true;

document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.page === page));
const section = document.getElementById("page-" + page) || document.getElementById("page-status");
section.classList.add("shown");

function fmtBytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function fmtSecs(s) {
  if (s == null) return "–";
  if (s < 1e-3) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1e3).toFixed(1) + " ms";
  return s.toFixed(2) + " s";
}
function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function colorOf(op) {
  // FNV-1a, then mixed: names that differ in one letter get far-apart hues.
  let h = 2166136261;
  for (const c of String(op)) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 2246822507) >>> 0;
  return `hsl(${h % 360}, 62%, 52%)`;
}
function workerName(id) {
  const w = state && state.workers.find(w => w.id === id);
  return w ? w.name : "#" + id;
}

// ---- the feed -----------------------------------------------------------

function place(ev) {
  // Lay bars of one worker into its threads' lanes: the first lane free at
  // the bar's start, else (reports arrive in batches, so bars overlap a
  // little) the lane that frees first.
  let ends = lanes.get(ev.worker);
  if (!ends) { ends = []; lanes.set(ev.worker, ends); }
  const w = state && state.workers.find(w => w.id === ev.worker);
  const threads = Math.max(1, w ? w.nthreads : 1);
  let lane = ends.findIndex(e => e <= ev.start_ms + 0.01);
  if (lane < 0 && ends.length < threads) { lane = ends.length; ends.push(0); }
  if (lane < 0) { lane = ends.indexOf(Math.min(...ends)); }
  ends[lane] = Math.max(ends[lane], ev.end_ms);
  return lane;
}

function ingest(msg) {
  state = msg.state;
  clockSkew = state.unix_ms - Date.now();
  thinned = msg.thinned || 1;
  for (const ev of msg.events) {
    if (ev.kind === "task") {
      const op = state.ops[ev.op] ? state.ops[ev.op].name : "op " + ev.op;
      bars.push({ w: ev.worker, op, s: ev.start_ms, e: ev.end_ms, lane: place(ev), kind: "task" });
    } else if (ev.kind === "failed") {
      bars.push({ w: ev.worker, op: ev.op, s: ev.at_ms - 1, e: ev.at_ms, lane: 0, kind: "failed" });
    } else if (ev.kind === "transfer") {
      transfers.push({ from: ev.from, to: ev.to, bytes: ev.nbytes, at: ev.at_ms });
      bars.push({ w: ev.to, op: "transfer", s: ev.at_ms - 1, e: ev.at_ms, lane: -1, kind: "transfer" });
    } else if (ev.kind === "moved") {
      bars.push({ w: ev.worker, op: "spill", s: ev.at_ms - 1, e: ev.at_ms, lane: -1, kind: ev.to === "Disk" || (ev.to === "Host" && ev.from === "Device") ? "spill" : "unspill" });
    }
  }
  if (bars.length > MAX_BARS) bars = bars.slice(bars.length - MAX_BARS);
  const cutoff = state.unix_ms - 60000;
  transfers = transfers.filter(t => t.at >= cutoff);
  dirty = true;
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.onopen = () => { live.className = "live on"; };
  source.onmessage = e => { try { ingest(JSON.parse(e.data)); } catch (err) { console.error(err); } };
  source.onerror = () => { live.className = "live off"; };
}

// ---- rendering ------------------------------------------------------------

function renderSummary() {
  const t = state.tasks;
  document.getElementById("summary").textContent =
    `${state.workers.length} workers · ${t.total} tasks · ${t.processing} processing · ${t.memory} in memory · ${t.erred} erred · ${state.clients} clients`;
}

function renderStream() {
  const canvas = document.getElementById("task-stream");
  const workers = state.workers.slice().sort(byName);
  const rowsOf = new Map();
  let rows = 0;
  for (const w of workers) {
    const n = Math.max(w.nthreads, 1);
    rowsOf.set(w.id, { first: rows, n, name: w.name });
    rows += n;
  }
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 800;
  // Rows shrink as workers grow (at least 3 px a thread), so the stream
  // stays under about 500 px; labels keep LABEL_H apart (thinned when the
  // workers' rows are lower) and hovering names the row.
  const labelW = 90, rowH = Math.max(3, Math.min(22, 480 / Math.max(rows, 1)));
  const height = Math.max(60, rows * rowH + 24);
  canvas.style.height = height + "px";
  canvas.width = width * dpr; canvas.height = height * dpr;
  canvas.rowsOf = rowsOf; canvas.rowH = rowH;
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.clearRect(0, 0, width, height);
  const windowMs = Number(document.getElementById("stream-window").value) * 1000;
  const now = Date.now() + clockSkew - panMs;
  const t0 = now - windowMs;
  const x = t => labelW + (t - t0) / windowMs * (width - labelW);
  ctx.font = LABEL_FONT;
  ctx.textBaseline = "top";
  let nextLabel = 0, labels = 0, band = 0;
  for (const r of rowsOf.values()) {
    const top = r.first * rowH, h = r.n * rowH;
    if (h >= 8) {
      ctx.fillStyle = "#eef0f3";
      ctx.fillRect(labelW, top + h - 1, width - labelW, 1);
    } else if (band++ % 2) {
      // Too low for a rule: alternate bands tell the workers apart.
      ctx.fillStyle = "#f4f5f8";
      ctx.fillRect(labelW, top, width - labelW, h);
    }
    if (top >= nextLabel) {
      ctx.fillStyle = "#6b7080";
      ctx.fillText(r.name, 4, top + 1, labelW - 8);
      nextLabel = top + LABEL_H;
      labels++;
    }
  }
  canvas.dataset.labels = String(labels);
  canvas.dataset.rowHeight = rowH.toFixed(1);
  ctx.textBaseline = "alphabetic";
  let drawn = 0, failed = 0;
  const ops = new Set();
  for (const b of bars) {
    if (b.e < t0 || b.s > now) continue;
    const r = rowsOf.get(b.w);
    if (!r) continue;
    const x0 = Math.max(labelW, x(b.s)), x1 = Math.max(x0 + 1, x(b.e));
    if (b.kind === "task" || b.kind === "failed") {
      const y = (r.first + Math.min(b.lane, r.n - 1)) * rowH;
      ctx.fillStyle = b.kind === "failed" ? "#d64545" : colorOf(b.op);
      ctx.fillRect(x0, y + 1, x1 - x0, rowH - 2);
      if (b.kind === "task") ops.add(b.op); else failed++;
    } else {
      // Transfers (red) and spills (orange; back: teal) as ticks over the worker's rows.
      ctx.fillStyle = b.kind === "transfer" ? "#e0245e" : b.kind === "spill" ? "#e09a2b" : "#1aa3a3";
      ctx.fillRect(x0, r.first * rowH, 2, r.n * rowH);
    }
    drawn++;
  }
  // time axis
  ctx.fillStyle = "#6b7080";
  const step = windowMs / 6;
  for (let i = 0; i <= 6; i++) {
    const t = t0 + i * step;
    ctx.fillText(`-${((now + panMs - t) / 1000).toFixed(0)}s`, Math.min(x(t), width - 30), height - 6);
  }
  canvas.dataset.bars = String(drawn);
  canvas.dataset.failed = String(failed);
  document.getElementById("stream-note").textContent =
    (thinned > 1 ? `(1 bar in ${thinned} shown) ` : "") + (panMs > 0 ? `(${(panMs / 1000).toFixed(0)} s back)` : "");
  document.getElementById("stream-legend").innerHTML =
    [...ops].slice(0, 20).map(op => `<span><span class="sw" style="background:${colorOf(op)}"></span>${esc(op)}</span>`).join("") +
    '<span><span class="sw" style="background:#e0245e"></span>transfer</span>' +
    '<span><span class="sw" style="background:#e09a2b"></span>spill</span>' +
    '<span><span class="sw" style="background:#d64545"></span>failed</span>';
}

function stackBar(parts, total) {
  return parts.filter(([, n]) => n > 0)
    .map(([cls, n]) => `<span class="${cls}" style="width:${(100 * n / Math.max(total, 1)).toFixed(3)}%"></span>`).join("");
}

function renderProgress() {
  const groups = state.groups.slice(0, 40);
  document.getElementById("progress").innerHTML = groups.length === 0 ? '<p class="empty">no tasks</p>' :
    groups.map(g => {
      const total = STATES.reduce((a, s) => a + g.states[s], 0);
      const done = g.states.memory + g.states.released + g.states.erred;
      return `<div class="row" data-group="${esc(g.name)}"><span class="label" title="${esc(g.op)}">${esc(g.name)}</span>
        <div class="bar">${stackBar(STATES.map(s => ["s-" + s, g.states[s]]), total)}</div>
        <span class="value">${done} / ${total}</span></div>`;
    }).join("");
}

/** Orders workers by name, numbers by value: local-2 before local-10. */
function byName(a, b) {
  return a.name.localeCompare(b.name, undefined, { numeric: true });
}

function renderMemory() {
  const th = state.thresholds;
  document.getElementById("memory").innerHTML = state.workers.slice().sort(byName).map(w => {
    const m = w.memory, used = m.device + m.host + m.disk;
    const scale = Math.max(w.memory_limit || 0, used, 1);
    const marks = w.memory_limit ? `<span class="mark spill" style="left:${100 * th.spill * w.memory_limit / scale}%" title="spill"></span>
      <span class="mark pause" style="left:${100 * th.pause * w.memory_limit / scale}%" title="pause"></span>` : "";
    return `<div class="row" data-worker="${esc(w.name)}"><span class="label">${esc(w.name)}${w.paused ? " (paused)" : ""}</span>
      <div class="bar">${stackBar([["t-device", m.device], ["t-host", m.host], ["t-disk", m.disk]], scale)}${marks}</div>
      <span class="value">${fmtBytes(used)}${w.memory_limit ? " / " + fmtBytes(w.memory_limit) : ""}</span></div>`;
  }).join("") + '<div class="legend"><span class="sw t-device"></span>device <span class="sw t-host"></span>host <span class="sw t-disk"></span>disk</div>';
}

function renderTransfers() {
  const since = state.unix_ms - 10000;
  const recent = transfers.filter(t => t.at >= since);
  const workers = state.workers;
  if (recent.length === 0) {
    document.getElementById("transfers").innerHTML =
      `<p class="empty">no transfers in the last 10 s (${fmtBytes(state.transfers.bytes)} in ${state.transfers.count} transfers since start)</p>`;
    return;
  }
  const sum = new Map();
  for (const t of recent) {
    const k = t.from + ">" + t.to;
    sum.set(k, (sum.get(k) || 0) + t.bytes);
  }
  const max = Math.max(...sum.values());
  let html = '<table class="matrix"><thead><tr><th>from \\ to</th>' + workers.map(w => `<th>${esc(w.name)}</th>`).join("") + "</tr></thead><tbody>";
  for (const a of workers) {
    html += `<tr><th>${esc(a.name)}</th>` + workers.map(b => {
      const n = sum.get(a.id + ">" + b.id) || 0;
      const alpha = n ? 0.15 + 0.6 * n / max : 0;
      return `<td style="background:rgba(224,36,94,${alpha})">${n ? fmtBytes(n) : ""}</td>`;
    }).join("") + "</tr>";
  }
  html += `</tbody></table><p class="legend">${fmtBytes([...sum.values()].reduce((a, b) => a + b, 0) / 10)}/s over the last 10 s</p>`;
  document.getElementById("transfers").innerHTML = html;
}

let sortKey = "name", sortDir = 1;
function workerRows() {
  return state.workers.map(w => ({
    name: w.name, address: w.address, gpu: w.resources.filter(r => r.startsWith("gpu")).join(",") || "–",
    nthreads: w.nthreads, processing: w.processing, held: w.held, device: w.memory.device, host: w.memory.host,
    disk: w.memory.disk, memory_limit: w.memory_limit, cpu: w.cpu_percent, bytes_in: w.bytes_in, bytes_out: w.bytes_out,
    last_seen_s: w.last_seen_s, status: w.paused ? "paused" : "running", dashboard: w.dashboard,
  }));
}
function renderWorkers() {
  const rows = workerRows().sort((a, b) => (a[sortKey] < b[sortKey] ? -1 : a[sortKey] > b[sortKey] ? 1 : 0) * sortDir);
  const bytes = new Set(["device", "host", "disk", "memory_limit", "bytes_in", "bytes_out"]);
  document.querySelector("#workers-table tbody").innerHTML = rows.map(r => "<tr>" +
    ["name", "address", "gpu", "nthreads", "processing", "held", "device", "host", "disk", "memory_limit", "cpu", "bytes_in", "bytes_out", "last_seen_s", "status"]
      .map(k => {
        const v = r[k];
        const text = bytes.has(k) ? fmtBytes(v) : k === "last_seen_s" ? (v == null ? "–" : v.toFixed(1) + " s ago")
          : k === "cpu" ? (v == null ? "–" : v.toFixed(0) + " %") : v;
        // A worker's name links its own page, when it serves one.
        const cell = k === "name" && r.dashboard ? `<a class="worker-page" href="${esc(r.dashboard)}/">${esc(text)}</a>` : esc(text);
        return `<td class="${typeof v === "number" ? "n" : ""}" data-key="${k}">${cell}</td>`;
      }).join("") + "</tr>").join("");
  document.querySelectorAll("#workers-table th").forEach(th => {
    th.classList.toggle("asc", th.dataset.key === sortKey && sortDir > 0);
    th.classList.toggle("desc", th.dataset.key === sortKey && sortDir < 0);
  });
  document.getElementById("workers-note").textContent = `${rows.length} live`;
}
document.querySelectorAll("#workers-table th").forEach(th => th.addEventListener("click", () => {
  if (sortKey === th.dataset.key) sortDir = -sortDir; else { sortKey = th.dataset.key; sortDir = 1; }
  dirty = true;
}));

function renderTasks() {
  const t = state.tasks;
  document.querySelector("#state-table tbody").innerHTML =
    ["waiting", "queued", "processing", "memory", "erred", "released", "total"]
      .map(s => `<tr><td><span class="sw s-${s}"></span>${s}</td><td class="n" id="count-${s}">${t[s]}</td></tr>`).join("");
  document.querySelector("#op-table tbody").innerHTML = state.ops.map(o =>
    `<tr><td>${esc(o.name)}</td><td class="n">${o.finished}</td><td class="n">${o.failed}</td><td class="n">${o.finished ? fmtSecs(o.duration_sum_s / o.finished) : "–"}</td></tr>`).join("");
  document.querySelector("#group-table tbody").innerHTML = state.groups.slice(0, 200).map(g =>
    `<tr><td>${esc(g.name)}</td><td>${esc(g.op)}</td>` +
    ["waiting", "queued", "processing", "memory", "erred", "released"].map(s => `<td class="n">${g.states[s]}</td>`).join("") +
    `<td class="n">${fmtBytes(g.nbytes)}</td></tr>`).join("");
  document.getElementById("erred-list").innerHTML = state.erred.length === 0 ? '<li class="empty">none</li>' :
    state.erred.map(e => `<li data-key="${esc(e.key)}"><code>${esc(e.key)}</code> (${esc(e.op)}): <span class="message">${esc(e.message)}</span></li>`).join("");
  document.getElementById("erred-note").textContent = state.n_erred > state.erred.length
    ? `(${state.erred.length} of ${state.n_erred} shown)` : `(${state.n_erred})`;
}

function renderGraph() {
  const groups = state.groups, edges = state.group_edges;
  if (groups.length === 0) { document.getElementById("graph").innerHTML = '<p class="empty">no tasks</p>'; return; }
  // Layers by longest path from the sources.
  const layer = groups.map(() => 0);
  for (let pass = 0; pass < groups.length; pass++) {
    let changed = false;
    for (const [a, b] of edges) if (layer[b] < layer[a] + 1) { layer[b] = layer[a] + 1; changed = true; }
    if (!changed) break;
  }
  const byLayer = [];
  groups.forEach((g, i) => { (byLayer[layer[i]] = byLayer[layer[i]] || []).push(i); });
  const boxW = 170, boxH = 46, gapX = 60, gapY = 14;
  const pos = [];
  byLayer.forEach((ids, l) => ids.forEach((i, k) => { pos[i] = { x: 10 + l * (boxW + gapX), y: 10 + k * (boxH + gapY) }; }));
  const width = 20 + byLayer.length * (boxW + gapX);
  const height = 20 + Math.max(...byLayer.map(ids => ids.length)) * (boxH + gapY);
  let svg = `<svg viewBox="0 0 ${width} ${height}" style="max-width:${width}px" xmlns="http://www.w3.org/2000/svg">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#9aa0ad"/></marker></defs>`;
  for (const [a, b] of edges) {
    const p = pos[a], q = pos[b];
    const x1 = p.x + boxW, y1 = p.y + boxH / 2, x2 = q.x, y2 = q.y + boxH / 2;
    svg += `<path d="M${x1},${y1} C${x1 + gapX / 2},${y1} ${x2 - gapX / 2},${y2} ${x2},${y2}" fill="none" stroke="#9aa0ad" marker-end="url(#arrow)"/>`;
  }
  const colors = { memory: "#3aa55d", processing: "#3b7dd8", queued: "#9b6cd6", waiting: "#b9bec9", erred: "#d64545", released: "#e0e2e7" };
  groups.forEach((g, i) => {
    const { x, y } = pos[i];
    const total = STATES.reduce((a, s) => a + g.states[s], 0) || 1;
    let off = 0, segs = "";
    for (const s of STATES) {
      const w = (boxW - 12) * g.states[s] / total;
      if (w > 0) segs += `<rect x="${x + 6 + off}" y="${y + 30}" width="${w}" height="8" fill="${colors[s]}"/>`;
      off += w;
    }
    svg += `<g class="group" data-group="${esc(g.name)}"><rect x="${x}" y="${y}" width="${boxW}" height="${boxH}" rx="5" fill="#fff" stroke="${colorOf(g.op)}" stroke-width="2"/>
      <text x="${x + 6}" y="${y + 14}" font-size="12" font-weight="600">${esc(g.name.slice(0, 22))}</text>
      <text x="${x + 6}" y="${y + 26}" font-size="10" fill="#6b7080">${esc(g.op)} · ${total} tasks</text>${segs}</g>`;
  });
  document.getElementById("graph").innerHTML = svg + "</svg>";
}

function render() {
  if (dirty && state) {
    dirty = false;
    renderSummary();
    if (page === "workers") renderWorkers();
    else if (page === "tasks") renderTasks();
    else if (page === "graph") renderGraph();
    else { renderStream(); renderProgress(); renderMemory(); renderTransfers(); }
    document.body.dataset.seq = String(state.seq);
  }
  requestAnimationFrame(render);
}

// Panning the task stream: drag back in time; "live" returns.
(function () {
  const canvas = document.getElementById("task-stream");
  let dragX = null;
  canvas.addEventListener("mousedown", e => { dragX = e.clientX; });
  // Hovering names the worker and thread of the row under the pointer.
  canvas.addEventListener("mousemove", e => {
    if (!canvas.rowsOf) return;
    const row = Math.floor((e.clientY - canvas.getBoundingClientRect().top) / canvas.rowH);
    const r = [...canvas.rowsOf.values()].find(r => row >= r.first && row < r.first + r.n);
    canvas.title = r ? `${r.name}, thread ${row - r.first + 1} of ${r.n}` : "";
  });
  window.addEventListener("mouseup", () => { dragX = null; });
  window.addEventListener("mousemove", e => {
    if (dragX == null) return;
    const windowMs = Number(document.getElementById("stream-window").value) * 1000;
    panMs = Math.max(0, panMs + (e.clientX - dragX) / canvas.clientWidth * windowMs);
    dragX = e.clientX; dirty = true;
  });
  document.getElementById("stream-live").addEventListener("click", () => { panMs = 0; dirty = true; });
  document.getElementById("stream-window").addEventListener("change", () => { dirty = true; });
  // The stream scrolls with time even without new data.
  setInterval(() => { if (page === "status") dirty = true; }, 250);
})();

connect();
requestAnimationFrame(render);
