// The page: collects the strokes, asks the server (which runs the network), draws what it answers.
// No computation of the network here: every number shown comes from /api/look.
"use strict";

const PEN = 20;  // pen width on the 280-pixel pad: strokes about as bold, for a digit's height, as the datasets'
const MIN_STEP = 1;  // pad pixels between kept points: pointer events come denser, and the body is bounded

const state = { run: null, seed: 0, strokes: [], testIndex: null, version: 0, shown: 0, busy: false, again: false, last: null };
window.look = state;  // for the tests and for anyone curious in the console
const $ = (id) => document.getElementById(id);

async function ask(url, body) {
  const options = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(url, options);
  const data = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(data.error || `${response.status}`);
  return data;
}

function problem(message) {
  $("problem").hidden = !message;
  $("problem").textContent = message || "";
}

function element(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---- colours: grey levels as the datasets show them (-1 white, +1 black); weights red (+) and blue (-)

function range(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (lo >= -1 && hi <= 1) return [-1, 1];  // tanh layers and digits: their own scale
  const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
  return [-m, m];
}

function grey(v, lo, hi) {
  const g = Math.round(255 * (1 - (v - lo) / (hi - lo)));
  return [g, g, g];
}

function diverging(v, m) {
  const t = Math.min(1, Math.abs(v) / m), c = Math.round(255 * (1 - t));
  return v >= 0 ? [255, c, c] : [c, c, 255];
}

// rows: an array of H arrays of W values; colour: value -> [r, g, b]
function paint(canvas, rows, colour) {
  const h = rows.length, w = rows[0].length;
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(w, h);
  rows.forEach((row, y) => row.forEach((v, x) => {
    const [r, g, b] = colour(v), i = 4 * (y * w + x);
    image.data[i] = r; image.data[i + 1] = g; image.data[i + 2] = b; image.data[i + 3] = 255;
  }));
  ctx.putImageData(image, 0, 0);
}

function pixelCanvas(rows, colour, size) {
  const c = element("canvas", "pixels");
  paint(c, rows, colour);
  c.style.width = `${size * rows[0].length}px`;
  c.style.height = `${size * rows.length}px`;
  return c;
}

// ---- drawing

function drawStrokes() {
  const pad = $("pad"), ctx = pad.getContext("2d");
  ctx.clearRect(0, 0, pad.width, pad.height);
  ctx.lineWidth = PEN; ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.strokeStyle = "#000"; ctx.fillStyle = "#000";
  for (const s of state.strokes) {
    ctx.beginPath();
    if (s.length === 1) { ctx.arc(s[0][0], s[0][1], PEN / 2, 0, 2 * Math.PI); ctx.fill(); continue; }
    ctx.moveTo(s[0][0], s[0][1]);
    for (const [x, y] of s.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }
}

function setupPad() {
  const pad = $("pad");
  let stroke = null;
  const at = (e) => {
    const r = pad.getBoundingClientRect();
    return [Math.round(10 * (e.clientX - r.left) * pad.width / r.width) / 10, Math.round(10 * (e.clientY - r.top) * pad.height / r.height) / 10];
  };
  const add = (p) => {
    const last = stroke[stroke.length - 1];
    if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= MIN_STEP) stroke.push(p);
  };
  pad.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    if (state.testIndex !== null) { state.testIndex = null; chooseMistake(null); }
    stroke = [at(e)];
    state.strokes.push(stroke);
    $("source").textContent = "your drawing";
    drawStrokes(); changed();
  });
  pad.addEventListener("pointermove", (e) => {
    if (!stroke) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) add(at(ev));
    drawStrokes(); changed();
  });
  const end = () => { if (stroke) { stroke = null; changed(); } };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => {
    state.strokes = []; state.testIndex = null; chooseMistake(null);
    $("source").textContent = "";
    drawStrokes(); changed();
  });
}

// ---- asking: one request in flight; a change meanwhile sends the latest drawing when it returns

function request() {
  if (state.testIndex !== null) return { test_index: state.testIndex, seed: state.seed };
  if (state.strokes.length) return { strokes: state.strokes, pen: PEN, seed: state.seed };
  return null;
}

function changed() {
  state.version += 1;
  document.body.dataset.version = state.version;
  send();
}

async function send() {
  if (state.busy) { state.again = true; return; }
  state.busy = true; document.body.dataset.busy = "1";
  const version = state.version, body = request();
  try {
    if (body === null) blank(); else render(await ask("api/look", body));
    problem("");
  } catch (e) {
    problem(e.message);
  }
  state.shown = version; document.body.dataset.shown = version;
  state.busy = false;
  if (state.again) { state.again = false; send(); } else document.body.dataset.busy = "0";
}

// ---- what the server answered

function blank() {
  state.last = null;
  const input = $("input");
  input.getContext("2d").clearRect(0, 0, input.width, input.height);
  delete input.dataset.values;
  $("answer").textContent = "–";
  for (const id of ["outputs", "layers", "votes"]) $(id).replaceChildren();
  $("spread").getContext("2d").clearRect(0, 0, 420, 54);
  $("spreadtext").textContent = "";
}

function render(r) {
  state.last = r;
  const input = $("input");
  paint(input, r.input, (v) => grey(v, -1, 1));
  input.dataset.values = JSON.stringify(r.input);  // the 16x16 shown, as the network got it
  $("answer").textContent = r.answer;
  $("answer").dataset.answer = r.answer;
  bars($("outputs"), r.scores, r.answer, range(r.scores), (v) => v.toFixed(2));
  renderLayers(r.layers, r.kernel);
  if (state.run.seeds > 1) renderSeeds(r.seeds);
}

function bars(box, values, top, [lo, hi], caption) {
  box.replaceChildren(...values.map((v, i) => {
    const bar = element("div", i === top ? "bar top" : "bar"), fill = element("div");
    fill.style.height = `${Math.max(1, 60 * (v - lo) / (hi - lo))}px`;
    bar.title = `${i}: ${caption(v)}`;
    bar.append(element("span", "", caption(v)), fill, element("span", "", String(i)));
    return bar;
  }));
}

const LABELS = { h1: "H1", h2: "H2", h3: "H3", out: "output" };

function renderLayers(layers, kernel) {
  const box = $("layers");
  box.replaceChildren(...layers.map((layer) => {
    const div = element("div", "layer");
    div.dataset.layer = layer.name;
    const shape = layer.shape, kernels = kernel && kernel.layer === layer.name ? kernel.values : null;
    div.append(element("h2", "", `${LABELS[layer.name] || layer.name} ${describe(shape)}${kernels ? ", each under its kernel" : ""}`));
    div.append(shape.length === 3 ? mapsOf(layer.values, shape, kernels) : unitsOf(layer.values.flat(Infinity)));
    return div;
  }));
  if (kernel && !layers.some((l) => l.name === kernel.layer)) box.prepend(kernelsOnly(kernel));
}

function describe(shape) {
  if (shape.length === 3) return `— ${shape[2]} maps of ${shape[0]}×${shape[1]}`;
  return `— ${shape.reduce((a, b) => a * b, 1)} units`;
}

function mapsOf(values, [h, w, c], kernels) {
  const flat = values.flat(Infinity), [lo, hi] = range(flat), size = Math.min(16, Math.max(3, Math.round(64 / Math.max(h, w))));
  const m = kernels ? Math.max(...kernels.flat(Infinity).map(Math.abs)) || 1 : 1;
  const maps = element("div", "maps");
  for (let k = 0; k < c; k++) {
    const cell = element("div", "map");
    if (kernels) cell.append(pixelCanvas(kernels[k], (v) => diverging(v, m), 10));
    cell.append(pixelCanvas(values.map((row) => row.map((u) => u[k])), (v) => grey(v, lo, hi), size), element("span", "", String(k)));
    maps.append(cell);
  }
  return maps;
}

function unitsOf(values) {
  const [lo, hi] = range(values), perRow = 30;
  const rows = [];
  for (let i = 0; i < values.length; i += perRow) rows.push(values.slice(i, i + perRow));
  while (rows.length > 1 && rows[rows.length - 1].length < perRow) rows[rows.length - 1].push(lo);  // pad the last row blank
  return pixelCanvas(rows, (v) => grey(v, lo, hi), Math.max(4, Math.min(14, Math.floor(420 / rows[0].length))));
}

function kernelsOnly(kernel) {
  const div = element("div", "layer"), m = Math.max(...kernel.values.flat(Infinity).map(Math.abs)) || 1;
  div.append(element("h2", "", `${kernel.layer}: first-layer kernels`));
  const maps = element("div", "maps");
  kernel.values.forEach((k) => maps.append(pixelCanvas(k, (v) => diverging(v, m), 10)));
  div.append(maps);
  return div;
}

function renderSeeds(seeds) {
  const n = seeds.answers.length, scores = seeds.winner_scores;
  bars($("votes"), seeds.votes, seeds.winner, [0, Math.max(...seeds.votes)], String);
  const mean = scores.reduce((a, b) => a + b, 0) / n;
  const std = Math.sqrt(scores.reduce((a, b) => a + (b - mean) ** 2, 0) / n);
  $("spreadtext").textContent = `${seeds.winner}: ${seeds.votes[seeds.winner]} of ${n} seeds; its score over the seeds `
    + `${mean.toFixed(2)} ± ${std.toFixed(2)} (${Math.min(...scores).toFixed(2)} to ${Math.max(...scores).toFixed(2)}); this seed says ${seeds.answers[state.seed]}`;
  spread($("spread"), scores);
}

function spread(canvas, scores) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  const lo = Math.min(-1, ...scores), hi = Math.max(1, ...scores), x = (v) => 10 + (w - 20) * (v - lo) / (hi - lo);
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#999"; ctx.fillStyle = "#666"; ctx.font = "10px sans-serif";
  ctx.beginPath(); ctx.moveTo(x(lo), 30); ctx.lineTo(x(hi), 30); ctx.stroke();
  for (const t of [-1, 0, 1]) { ctx.fillText(String(t), x(t) - 3, 48); ctx.fillRect(x(t), 27, 1, 6); }
  scores.forEach((v, i) => {
    ctx.fillStyle = i === state.seed ? "#c53" : "rgba(60, 90, 110, .5)";
    ctx.beginPath(); ctx.arc(x(v), 18, i === state.seed ? 5 : 3, 0, 2 * Math.PI); ctx.fill();
  });
}

// ---- the run's mistakes

async function loadMistakes() {
  const box = $("mistakes");
  try {
    const m = await ask(`api/mistakes?seed=${state.seed}`);
    if (m.count === null) { $("mistakecount").textContent = `(none to show: ${m.reason})`; box.replaceChildren(); return; }
    const shown = m.digits.length < m.count ? `; the first ${m.digits.length}` : "";
    $("mistakecount").textContent = `(${m.count} of ${m.total.toLocaleString("en")}${shown}; true→predicted; click one to look inside)`;
    box.replaceChildren(...m.digits.map(thumbnail));
  } catch (e) {
    problem(e.message);
  }
}

function thumbnail(d) {
  const div = element("div", "mistake");
  div.dataset.index = d.index;
  const rows = [];
  for (let y = 0; y < 16; y++) rows.push(d.pixels.slice(16 * y, 16 * y + 16));
  div.append(pixelCanvas(rows, (p) => [255 - p, 255 - p, 255 - p], 2.5), element("span", "", `${d.label}→${d.predicted}`));
  div.addEventListener("click", () => {
    state.testIndex = d.index; state.strokes = [];
    drawStrokes(); chooseMistake(div);
    $("source").textContent = `test digit #${d.index}, a ${d.label}`;
    changed();
  });
  return div;
}

function chooseMistake(div) {
  for (const e of document.querySelectorAll(".mistake.chosen")) e.classList.remove("chosen");
  if (div) div.classList.add("chosen");
}

// ---- the run and the seed picker

function describeRun() {
  const r = state.run, error = r.test_error ? `; this seed's test error ${r.test_error[state.seed]}%` : "";
  $("about").textContent = `${r.model} trained on ${r.data} (digits made like ${r.style}'s), ${r.seeds} seed${r.seeds > 1 ? "s" : ""}${error}`
    + (r.notes.length ? `. ${r.notes.join("; ")}` : "");
}

function setupSeeds() {
  const picker = $("seed");
  $("seedbox").hidden = state.run.seeds < 2;
  picker.max = state.run.seeds - 1;
  picker.addEventListener("input", () => {
    state.seed = Number(picker.value);
    $("seedname").textContent = `${state.seed} of ${state.run.seeds}`;
    describeRun(); loadMistakes(); changed();
  });
  $("seedname").textContent = `0 of ${state.run.seeds}`;
}

async function start() {
  try {
    state.run = await ask("api/run");
  } catch (e) {
    problem(`cannot reach the server: ${e.message}`);
    return;
  }
  $("run").textContent = state.run.workdir;
  describeRun(); setupPad(); setupSeeds(); loadMistakes();
  document.body.dataset.ready = "1";
}

start();
