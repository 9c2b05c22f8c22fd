// redline duty console: vanilla JS over the station's API only (docs/API.md). No build step.
// Everything the peer wrote is put on the page as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  me: null, status: null, line: null, ws: null, wsRetry: null, alarmsSeen: 0, banner: [],
  audio: null, lastCounters: "", refreshTimer: null, composeKey: null,
};

// -- small helpers ------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const svg = (tag, attrs) => {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
};
const pad = (n) => String(n).padStart(2, "0");
function utc(ms, withDate) {
  if (!ms) return "-";
  const d = new Date(ms);
  const t = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}Z`;
  return withDate ? `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${t}` : t;
}
const secs = (ms) => (ms === null || ms === undefined ? "-" : `${(ms / 1000).toFixed(1)} s`);
const short = (id) => (id ? id.slice(0, 10) : "-");
function replace(id, ...children) { const el = $(id); el.replaceChildren(...children.flat()); return el; }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = { error: `${r.status} ${r.statusText}` }; }
  if (r.status === 401 && path !== "/api/login") { showLogin(data.error); throw new ApiError(401, data.error); }
  if (!r.ok) throw new ApiError(r.status, data.error || `${r.status}`);
  return data;
}
const lineUrl = (what) => `/api/lines/${encodeURIComponent(state.line)}/${what}`;
const can = (cap) => !!state.me && state.me.capabilities.includes(cap);

// -- sound: WebAudio, started by the login click (browsers need a gesture) ------------------------
function audioOn() {
  if (!state.audio) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (Ctx) state.audio = new Ctx();
  }
  if (state.audio && state.audio.state === "suspended") state.audio.resume();
}
function beep(times) {
  const ctx = state.audio;
  if (!ctx) return;
  for (let i = 0; i < times; i++) {
    const osc = ctx.createOscillator(), gain = ctx.createGain();
    osc.type = "square"; osc.frequency.value = i % 2 ? 660 : 880;
    gain.gain.value = 0.2;
    osc.connect(gain).connect(ctx.destination);
    const t = ctx.currentTime + i * 0.3;
    osc.start(t); osc.stop(t + 0.2);
  }
}
window.redlineBeeps = 0; // counted for the console test

// -- login ---------------------------------------------------------------------------------------
function showLogin(message) {
  if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
  clearTimeout(state.wsRetry);
  state.live = false;
  dismissBanner();
  clearInterval(state.refreshTimer);
  state.me = null;
  $("console").hidden = true;
  $("login-screen").hidden = false;
  $("login-error").textContent = message || "";
  $("login-password").value = "";
}
async function login(ev) {
  ev.preventDefault();
  audioOn();
  $("login-error").textContent = "";
  $("login-submit").disabled = true;
  try {
    const me = await api("POST", "/api/login", { user: $("login-user").value, password: $("login-password").value });
    start(me);
  } catch (e) {
    $("login-error").textContent = e.message;
  } finally {
    $("login-submit").disabled = false;
    $("login-password").value = "";
  }
}
async function start(me) {
  state.me = me;
  state.lastCounters = "";
  $("login-screen").hidden = true;
  $("console").hidden = false;
  $("whoami").textContent = `${me.user} (${me.role})`;
  $("station-name").textContent = me.station;
  for (const id of ["compose-form", "tests-send", "notice-form"]) $(id).hidden = !can("operate");
  connect();
  clearInterval(state.refreshTimer);
  state.refreshTimer = setInterval(refreshViews, 5000);
  runVerify();
}

// -- live events ---------------------------------------------------------------------------------
function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/events`);
  state.ws = ws;
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type === "hello") {
      setConnection(true);
      $("alarms").replaceChildren(); // hello brings the latest 20 again, also after a reconnect
      for (const a of msg.alarms) addAlarm(a, false);
      setStatus(msg.status, msg.now);
    } else if (msg.type === "status") setStatus(msg.status, msg.now);
    else if (msg.type === "alarm") addAlarm(msg.alarm, true);
    else if (msg.type === "logout" || msg.type === "error") showLogin(msg.error);
  };
  ws.onclose = (ev) => {
    if (ev.code === 4401 || ev.code === 4403) { showLogin("the session ended: log in again"); return; }
    setConnection(false);
    state.wsRetry = setTimeout(connect, 2000);
  };
}
function setConnection(up) {
  const el = $("connection");
  el.textContent = up ? "LIVE" : "CONNECTION TO STATION LOST";
  el.className = `conn ${up ? "live" : "lost"}`;
  if (!up && state.live) showBanner({ level: "alarm", text: "CONNECTION TO THE STATION LOST: this console is not live" }, true);
  state.live = up;
}

// -- alarms --------------------------------------------------------------------------------------
function addAlarm(a, fresh) {
  const li = h("li", { class: a.level }, `${utc(a.time, true)}  `, a.text);
  const list = $("alarms");
  list.prepend(li);
  while (list.children.length > 100) list.lastChild.remove();
  if (fresh && a.level !== "info") showBanner(a, true);
}
function showBanner(a, sound) {
  state.banner.push(a);
  const banner = $("alarm-banner");
  banner.hidden = false;
  banner.className = `banner ${a.level === "alarm" ? "flashing" : "warning"}`;
  $("alarm-text").textContent = a.text;
  $("alarm-count").textContent = state.banner.length > 1 ? `${state.banner.length} alarms` : "";
  if (sound && a.level === "alarm") { beep(3); window.redlineBeeps += 1; }
}
function dismissBanner() {
  state.banner = [];
  $("alarm-banner").hidden = true;
}

// -- status --------------------------------------------------------------------------------------
function lineWord(ln) {
  if (ln.halted) return ["HALTED: EQUIVOCATION", "bad"];
  if (!ln.active) return ["WAITING FOR SAFETY-CODE CONFIRMATION", "wait"];
  return ln.synced ? ["IN SYNC", "good"] : ["NOT IN SYNC", "bad"];
}
function setStatus(status, now) {
  state.status = status;
  if (now) state.clockOffset = now - Date.now();
  const sel = $("line-select");
  const ids = status.lines.map((l) => l.line);
  if (sel.options.length !== ids.length || [...sel.options].some((o, i) => o.value !== ids[i])) {
    sel.replaceChildren(...status.lines.map((l) => h("option", { value: l.line }, `${l.peer} · ${l.line.slice(0, 8)}`)));
    if (!ids.includes(state.line)) state.line = ids[0] || null;
    sel.value = state.line;
  }
  const ln = status.lines.find((l) => l.line === state.line);
  if (!ln) { replace("line-state", "NO LINE YET"); return; }
  const [word, cls] = lineWord(ln);
  const el = $("line-state");
  el.textContent = word;
  el.className = `state-word ${cls}`;
  $("line-peer").textContent = `with ${ln.peer} (${ln.peer_lang})`;
  $("line-counters").textContent =
    `ours: seq ${ln.our_seq}   theirs: seq ${ln.their_seq}   outbox: ${ln.outbox}   unreceipted: ${ln.unreceipted}`;
  replace("paths", Object.entries(ln.paths).sort().map(([name, p]) => h("tr", {},
    h("td", {}, name),
    h("td", { class: p.up ? "good" : "bad" }, p.up ? "UP" : "DOWN"),
    h("td", {}, p.rtt_ms === null ? "-" : `${p.rtt_ms.toFixed(1)} ms`),
    h("td", {}, p.skew_ms === null ? "-" : `${p.skew_ms >= 0 ? "+" : ""}${Math.round(p.skew_ms)} ms`),
    h("td", {}, p.up ? utc(p.last_rx) : (p.reason || "-")),
  )));
  const confirm = $("confirm-form");
  confirm.hidden = ln.active || ln.confirmed.local || !can("confirm");
  if (!confirm.hidden) $("confirm-note").textContent = `safety code here: ${ln.safety_code}`;
  const counters = `${ln.line}:${ln.our_seq}:${ln.their_seq}:${ln.outbox}:${ln.unreceipted}`;
  if (counters !== state.lastCounters) { state.lastCounters = counters; refreshViews(); }
}

// -- views ---------------------------------------------------------------------------------------
let refreshing = false, again = false;
async function refreshViews() {
  if (!state.line || !state.me) return;
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    const [log, flash, tests, calls, notices] = await Promise.all([
      api("GET", `${lineUrl("log")}?limit=200`), api("GET", lineUrl("flash")), api("GET", lineUrl("tests")),
      api("GET", lineUrl("calls")), api("GET", lineUrl("notices")),
    ]);
    renderLog(log); renderFlash(flash); renderTests(tests); renderCalls(calls); renderNotices(notices);
  } catch (e) {
    if (e.status !== 401) console.warn("refresh failed", e);
  } finally {
    refreshing = false;
    if (again) { again = false; refreshViews(); }
  }
}

function renderLog(log) {
  const rows = [...log.rows].reverse().map((r) => {
    const ack = r.ack ? `${r.ack.by ? `✓ ACK by ${r.ack.by}` : r.ack.state.toUpperCase()}` : "";
    const receipt = r.ours ? (r.receipted ? "✓ RECEIPTED" : "SENT, NO RECEIPT YET") : "✓ STORED";
    return h("tr", { class: r.priority === "FLASH" ? "flash" : "", "data-id": r.id },
      h("td", {}, utc(r.stored_at, true)), h("td", {}, r.from), h("td", {}, r.seq),
      h("td", {}, r.kind, r.priority !== "ROUTINE" ? ` ${r.priority}` : ""), h("td", { class: "text" }, r.text),
      h("td", { class: r.receipted || !r.ours ? "good receipt" : "wait receipt" }, receipt),
      h("td", { class: r.ack ? (r.ack.by ? "good ack" : "bad ack") : "ack" }, ack));
  });
  const outbox = log.outbox.map((r) => h("tr", { class: "outbox", "data-outbox": r.outbox },
    h("td", {}, utc(r.stored_at, true)), h("td", {}, "us"), h("td", {}, "-"), h("td", {}, r.kind),
    h("td", { class: "text" }, r.text), h("td", { class: "wait receipt" }, "IN OUTBOX"), h("td", {}, "")));
  replace("log", outbox.reverse(), rows);
}

function renderFlash(flashes) {
  const now = Date.now() + (state.clockOffset || 0);
  const waiting = flashes.filter((f) => !f.ours && !f.acked_by);
  replace("flash-waiting", waiting.length ? waiting.map((f) => h("div", { class: "flash-item", "data-id": f.id },
    h("div", { class: "bad" }, `INCOMING FLASH seq ${f.seq} — ACKNOWLEDGE BY ${utc(f.deadline)}`,
      f.deadline ? ` (${Math.max(0, Math.round((f.deadline - now) / 1000))} s left)` : ""),
    h("div", { class: "text" }, f.text || ""),
    f.escalations.length ? h("div", { class: "wait" }, "escalated: ", f.escalations.map((e) => e.level).join(", ")) : null,
    can("operate") ? h("button", { class: "danger ack-button", type: "button", onclick: () => ack(f.id) },
      `ACKNOWLEDGE as ${state.me.user}`) : h("div", { class: "summary" }, "(your role cannot acknowledge)"),
  )) : h("div", { class: "summary" }, "no FLASH waiting for acknowledgement"));
  replace("flash-history", [...flashes].reverse().slice(0, 20).map((f) => h("tr", {},
    h("td", {}, f.ours ? "out" : "in"), h("td", {}, f.seq), h("td", {}, f.text || ""), h("td", {}, utc(f.receipted_at)),
    h("td", {}, f.escalations.map((e) => e.level).join(", ") || "-"),
    h("td", { class: f.acked_by ? "good" : "bad" }, f.acked_by ? `${f.acked_by} ${utc(f.acked_at)}` : f.state.toUpperCase()))));
}

async function ack(id) {
  try { await api("POST", lineUrl("ack"), { flash_id: id }); dismissBanner(); refreshViews(); }
  catch (e) { alert(`ACK refused: ${e.message}`); }
}

function renderTests(t) {
  replace("tests-to-answer", t.to_answer.map((x) => h("div", { class: "test-item" },
    h("div", { class: "wait" }, `LINE TEST from the peer — answer by ${utc(x.deadline)}`),
    can("operate") ? h("button", { class: "go", type: "button", onclick: () => answer(x.id) },
      `ANSWER as ${state.me.user}`) : null)));
  const since = t.since_last_proven_ms;
  $("tests-summary").textContent = `sent ${t.sent}: passed ${t.passed}, missed ${t.missed}, pending ${t.pending}; ` +
    `median answer ${secs(t.answer_ms_median)}, worst ${secs(t.answer_ms_worst)}; line last proven ` +
    (since === null ? "never" : `${(since / 3600000).toFixed(1)} h ago`);
  replace("tests", [...t.tests].reverse().slice(0, 20).map((x) => h("tr", {},
    h("td", {}, utc(x.sent_at, true)), h("td", {}, utc(x.receipted_at)), h("td", {}, x.answered_by || "-"),
    h("td", {}, secs(x.answer_ms)),
    h("td", { class: x.result === "passed" ? "good" : x.result === "missed" ? "bad" : "wait" }, x.result.toUpperCase()))));
}
async function answer(id) {
  try { await api("POST", lineUrl("answer"), { test_id: id }); refreshViews(); }
  catch (e) { alert(`answer refused: ${e.message}`); }
}

function renderCalls(pairs) {
  if (!pairs.length) { replace("calls", h("div", { class: "summary" }, "no call requests or calls yet")); return; }
  replace("calls", pairs.map((p) => h("div", {},
    h("h3", {}, p.principals.join(" ↔ ")),
    h("div", { class: "summary" }, `accepted ${p.accepted}, declined ${p.declined}, unanswered ${p.unanswered}, ` +
      `open ${p.open}; days since last call: ${p.days_since_last_call ?? "no call yet"}`),
    p.calls.map((c) => {
      const ro = (side, label) => {
        const r = c.readouts[side];
        return h("div", { class: "readout" }, h("strong", {}, label), h("div", {}, r ? r.text : "(not filed)"),
          r ? h("div", { class: "by" }, `— ${r.by} (${r.lang})`) : null);
      };
      return h("div", { class: "call" }, h("div", {}, `call ${utc(c.start, true)} to ${utc(c.end)}`),
        h("div", { class: "readouts" }, ro("ours", "OUR READOUT"), ro("theirs", "THEIR READOUT")));
    }))));
}

// -- notices on a map: an equirectangular plot of the areas, no tiles (no internet) -----------------
function rings(area) {
  const num = (c) => [Number(c[0]), Number(c[1])];
  if (area.type === "Polygon") return [area.coordinates.map((r) => r.map(num))];
  if (area.type === "MultiPolygon") return area.coordinates.map((p) => p.map((r) => r.map(num)));
  return [];
}
function renderNotices(v) {
  const conflicted = new Set(v.conflicts.flatMap((c) => c.ids));
  replace("notice-conflicts", v.conflicts.map((c) => h("div", { class: "conflict-line" },
    `CONFLICT ${short(c.ids[0])} ↔ ${short(c.ids[1])}: ${c.distance_m} m apart (margin ${c.margin_m} m), ` +
    `${utc(c.time_overlap[0], true)} to ${utc(c.time_overlap[1])}, ${c.band_overlap[0]}-${c.band_overlap[1]} m`)));
  replace("notices", v.active.map((n) => h("tr", { class: conflicted.has(n.id) ? "bad" : "" },
    h("td", {}, short(n.id)), h("td", {}, n.ours ? "ours" : "theirs"), h("td", {}, n.kind),
    h("td", {}, `${utc(n.start, true)} to ${utc(n.end, true)}`), h("td", {}, `${n.floor_m}-${n.ceiling_m}`),
    h("td", {}, `${n.margin_m} m`), h("td", {}, n.text))));
  drawMap(v, conflicted);
}
function drawMap(v, conflicted) {
  const map = $("map");
  map.replaceChildren();
  const shapes = v.active.map((n) => {
    if (n.area.type === "Point") {
      const [lon, lat] = n.area.coordinates.map(Number);
      return { n, point: [lon, lat], r: (n.radius_m || 0) / 111320 };
    }
    return { n, polys: rings(n.area) };
  });
  const pts = [];
  for (const s of shapes) {
    if (s.point) {
      const rx = s.r / Math.max(0.05, Math.cos(s.point[1] * Math.PI / 180)); // degrees of longitude
      pts.push([s.point[0] - rx, s.point[1] - s.r], [s.point[0] + rx, s.point[1] + s.r]);
    }
    else s.polys.forEach((p) => p.forEach((r) => pts.push(...r)));
  }
  const W = 1200, H = 500;
  if (!pts.length) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "grat-label" });
    t.textContent = "no active notices";
    map.append(t);
    return;
  }
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [x, y] of pts) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  const k = Math.cos(((y0 + y1) / 2) * Math.PI / 180); // shrink longitude so shapes are not stretched
  const padDeg = Math.max(x1 - x0, y1 - y0, 0.1) * 0.15;
  x0 -= padDeg; x1 += padDeg; y0 -= padDeg; y1 += padDeg;
  const scale = Math.min(W / ((x1 - x0) * k), H / (y1 - y0));
  const ox = (W - (x1 - x0) * k * scale) / 2, oy = (H - (y1 - y0) * scale) / 2;
  const X = (lon) => ox + (lon - x0) * k * scale, Y = (lat) => oy + (y1 - lat) * scale;
  const step = [0.1, 0.25, 0.5, 1, 2, 5, 10].find((s) => (y1 - y0) / s <= 8) || 10;
  for (let g = Math.ceil(x0 / step) * step; g <= x1; g += step) {
    map.append(svg("line", { x1: X(g), x2: X(g), y1: 0, y2: H, class: "grat" }));
    const t = svg("text", { x: X(g) + 2, y: H - 4, class: "grat-label" }); t.textContent = `${g.toFixed(2)}°E`; map.append(t);
  }
  for (let g = Math.ceil(y0 / step) * step; g <= y1; g += step) {
    map.append(svg("line", { x1: 0, x2: W, y1: Y(g), y2: Y(g), class: "grat" }));
    const t = svg("text", { x: 4, y: Y(g) - 2, class: "grat-label" }); t.textContent = `${g.toFixed(2)}°N`; map.append(t);
  }
  const path = (polys) => polys.map((p) => p.map((r) => "M" + r.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join("L") + "Z").join("")).join("");
  for (const s of shapes) {
    const cls = `area ${s.n.ours ? "ours" : "theirs"}${conflicted.has(s.n.id) ? " conflict" : ""}`;
    let el, lx, ly;
    if (s.point) {
      // a disc of radius_m: as many pixels across as north-south, since X() already shrinks longitude
      el = svg("circle", { cx: X(s.point[0]), cy: Y(s.point[1]), r: Math.max(3, s.r * scale), class: cls });
      [lx, ly] = [X(s.point[0]), Y(s.point[1])];
    } else {
      el = svg("path", { d: path(s.polys), class: cls, "fill-rule": "evenodd" });
      const r0 = s.polys[0][0];
      [lx, ly] = [X(r0.reduce((a, c) => a + c[0], 0) / r0.length), Y(r0.reduce((a, c) => a + c[1], 0) / r0.length)];
    }
    el.setAttribute("data-id", s.n.id || "");
    const title = svg("title", {}); title.textContent = `${s.n.ours ? "ours" : "theirs"} ${s.n.kind} ${s.n.floor_m}-${s.n.ceiling_m} m: ${s.n.text}`;
    el.append(title);
    map.append(el);
    const label = svg("text", { x: lx, y: ly, "text-anchor": "middle", class: "label" });
    label.textContent = `${s.n.kind.toUpperCase()} ${s.n.ours ? "(ours)" : "(theirs)"}`;
    map.append(label);
  }
  for (const c of v.conflicts) {
    const w = c.where;
    if (!w) continue;
    if (w.type === "Point") map.append(svg("circle", { cx: X(Number(w.coordinates[0])), cy: Y(Number(w.coordinates[1])), r: 8, class: "where" }));
    else if (w.type === "Polygon" || w.type === "MultiPolygon") map.append(svg("path", { d: path(rings(w)), class: "where" }));
  }
}

// -- actions -------------------------------------------------------------------------------------
async function send(ev) {
  ev.preventDefault();
  const text = $("compose-text").value;
  if (!text.trim()) return;
  const priority = $("compose-priority").value;
  // One key per message, kept across retries until the station has it: a retry never sends twice.
  state.composeKey = state.composeKey || (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) + Date.now());
  const result = $("compose-result");
  result.textContent = "sending…"; result.className = "result wait";
  $("compose-send").disabled = true;
  try {
    const r = await api("POST", lineUrl("send"), { text, priority, idempotency_key: state.composeKey });
    state.composeKey = null;
    $("compose-text").value = "";
    result.textContent = r.seq ? `ACCEPTED: seq ${r.seq}, ${r.state}` : `ACCEPTED: ${r.state}`;
    result.className = "result good";
    refreshViews();
  } catch (e) {
    result.textContent = `NOT SENT: ${e.message}`; result.className = "result bad";
    if (e.status && e.status < 500 && e.status !== 409) state.composeKey = null;
  } finally {
    $("compose-send").disabled = false;
  }
}
async function sendTest() {
  try { await api("POST", lineUrl("test"), {}); refreshViews(); } catch (e) { alert(`test refused: ${e.message}`); }
}
async function fileNotice(ev) {
  ev.preventDefault();
  const num = (id) => ($(id).value === "" ? undefined : Number($(id).value));
  const body = {
    kind: $("notice-kind").value, area: $("notice-area").value, floor_m: num("notice-floor"),
    ceiling_m: num("notice-ceiling"), start: $("notice-start").value, end: $("notice-end").value,
    margin_m: num("notice-margin") || 0, text: $("notice-text").value,
  };
  if (num("notice-radius") !== undefined) body.radius_m = num("notice-radius");
  const result = $("notice-result");
  try {
    const r = await api("POST", lineUrl("notice"), body);
    result.textContent = `FILED: ${r.state}`; result.className = "result good";
    refreshViews();
  } catch (e) { result.textContent = `REFUSED: ${e.message}`; result.className = "result bad"; }
}
async function confirmCode(ev) {
  ev.preventDefault();
  try { await api("POST", lineUrl("confirm"), { code: $("confirm-code").value }); }
  catch (e) { alert(e.message); }
}
async function runVerify() {
  const el = $("verify-state");
  el.textContent = "CHECKING…"; el.className = "state-word small wait";
  try {
    const v = await api("GET", "/api/verify");
    el.textContent = v.ok ? "VERIFIED" : "FAILED";
    el.className = `state-word small ${v.ok ? "good" : "bad"}`;
    replace("verify-detail", v.lines.map((l) => h("div", {},
      `line ${l.line.slice(0, 8)}: envelopes ${JSON.stringify(l.chains)}, co-signed ${JSON.stringify(l.cosigned)}, ` +
      `one-sided tail ${JSON.stringify(l.one_sided_tail)}, checkpoints ${l.checkpoints}`,
      l.problems.length ? h("div", { class: "bad" }, `first problem: ${l.problems[0]}`) : null)),
      h("div", {}, `checked ${utc(v.checked_at, true)}`));
  } catch (e) {
    el.textContent = "NOT CHECKED"; el.className = "state-word small bad";
    $("verify-detail").textContent = e.message;
  }
}

function tickClock() {
  $("clock").textContent = utc(Date.now() + (state.clockOffset || 0), true);
}

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", async () => { try { await api("POST", "/api/logout"); } catch (e) {} showLogin(""); });
  $("alarm-dismiss").addEventListener("click", dismissBanner);
  $("compose-form").addEventListener("submit", send);
  $("tests-send").addEventListener("click", sendTest);
  $("notice-form").addEventListener("submit", fileNotice);
  $("confirm-form").addEventListener("submit", confirmCode);
  $("verify-run").addEventListener("click", runVerify);
  $("line-select").addEventListener("change", (e) => { state.line = e.target.value; state.lastCounters = ""; if (state.status) setStatus(state.status); });
  document.addEventListener("click", audioOn);
  setInterval(tickClock, 1000);
  try {
    const me = await fetch("/api/me", { credentials: "same-origin" });
    if (me.ok) start(await me.json()); else showLogin("");
  } catch (e) { showLogin("the station does not answer"); }
});
