// redline duty console: vanilla JS over the station's API only (docs/API.md). No build step.
//
// Rules this file keeps:
// - Everything a station or a person wrote is put on the page as text (textContent, never HTML),
//   marked with the language it was written in (lang="..."); the console's own words come from
//   strings.js in the reader's language.
// - Panels are updated in place (reconcile): an unchanged row is never rebuilt, so focus, a half
//   typed readout or an open form survive every refresh.
// - The alarm area shows what is true now (GET /watch), most urgent first, until it clears; an
//   alarm sounds again and again until a person silences or settles it; when the browser keeps the
//   sound off, the console says so.
// - Every form files once: one idempotency key per submit, its buttons disabled while in flight.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  me: null, settings: null, lang: "en", status: null, line: null, ws: null, wsRetry: null, live: false,
  watch: null, conditions: [], silenced: new Set(), audio: null, lastBeep: 0, notified: new Set(),
  heartbeat: 1, lastHeard: 0, lostAt: 0, asOf: null, loggedOut: null, // liveness (watchdog, showLogin)
  clockOffset: 0, refreshTimer: null, watchTimer: null, verify: null, views: {}, map: null,
  noticeSig: "", noticeIds: "", draw: null, lastCounters: "", langOf: new Map(),
  search: null, // { q, kind } while the transcript is filtered (GET /search); null: the newest (GET /log)
  shape: "polygon", // what DRAW ON MAP draws: polygon, rectangle or circle
  offsets: {}, // the page each paged view is at (its offset), when a person went past the first
  alarmLog: [], // the station's alarms shown in the log, oldest first (redrawn in another language)
};
window.redlineBeeps = 0; // patterns actually played (the console test counts them)
window.redlineRefreshes = 0; // completed panel refreshes (the focus test waits for one)
window.redlineNotifications = 0;

// -- words -----------------------------------------------------------------------------------------
const STR = () => window.REDLINE_STRINGS[S.lang] || window.REDLINE_STRINGS.en;
function t(key, params) {
  let s = STR()[key];
  if (s === undefined) s = window.REDLINE_STRINGS.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (params && params[k] !== undefined && params[k] !== null ? String(params[k]) : ""));
}
// The same, as nodes: a parameter may be an element (a text in its own language, a countdown).
function tx(key, params) {
  let s = STR()[key];
  if (s === undefined) s = window.REDLINE_STRINGS.en[key] ?? key;
  const out = [];
  let last = 0;
  for (const m of s.matchAll(/\{(\w+)\}/g)) {
    out.push(s.slice(last, m.index));
    const v = params ? params[m[1]] : "";
    // A node put in twice would be moved, not copied: the first place would read empty.
    out.push(v instanceof Node ? (out.includes(v) ? v.cloneNode(true) : v) : String(v ?? ""));
    last = m.index + m[0].length;
  }
  out.push(s.slice(last));
  return out.filter((x) => x !== "");
}
function applyStatic() {
  document.documentElement.lang = S.lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  $("lang-select").value = S.lang;
  fillKinds();
  if (S.me) {
    $("call-record-submit").textContent = t("calls.submit_record", { user: S.me.user });
    $("whoami").textContent = `${S.me.user} (${t("role." + S.me.role)})`;
    $("console-title").textContent = `redline — ${S.me.station}`;
  }
  updateTitle();
}
function setLang(lang) {
  if (!window.REDLINE_STRINGS[lang] || lang === S.lang) return;
  S.lang = lang;
  try { localStorage.setItem("redline.lang", lang); } catch (e) { /* private mode */ }
  applyStatic();
  rerenderAll();
}

// -- small helpers -----------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
// Text someone wrote, in the language they wrote it in.
// dir="auto" with unicode-bidi: isolate (style.css .said): a peer's bidi controls (U+202E) stay
// inside its text and never reorder the console's own words, quotes or times around it.
const said = (text, lang, tag) => h(tag || "span", { lang: lang || null, class: "said", dir: "auto" }, text ?? "");
// An escalation level (a protocol word: deputy, supervisor, deadline-missed) in the reader's language.
const escLevel = (level) => STR()[`escalation.${level}`] || String(level);
const pad = (n) => String(n).padStart(2, "0");
// A time, HH:MM:SSZ, with its date when asked, and always when it is not of the current UTC day (the
// station's, now()): after midnight yesterday's 23:59:10Z FLASH reads "03 Dec 23:59:10Z", never as
// tonight's. The rows that show one are redrawn when the day changes (reconcile's signature, tick).
const DAY_MS = 86400000;
const utcDay = (ms) => Math.floor(Number(ms) / DAY_MS);
function utc(ms, withDate) {
  if (ms === null || ms === undefined || ms === "") return "-";
  const d = new Date(Number(ms));
  if (Number.isNaN(d.getTime())) return "-";
  const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}Z`;
  if (withDate) return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${time}`;
  if (utcDay(ms) === utcDay(now())) return time;
  const year = d.getUTCFullYear() === new Date(now()).getUTCFullYear() ? "" : ` ${d.getUTCFullYear()}`;
  return `${pad(d.getUTCDate())} ${t("date.months").split(" ")[d.getUTCMonth()]}${year} ${time}`;
}
function dur(ms) {
  let s = Math.max(0, Math.round(Math.abs(ms) / 1000));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const parts = [];
  if (d) parts.push(t("dur.d", { n: d }));
  if (hh) parts.push(t("dur.h", { n: hh }));
  if (m) parts.push(t("dur.min", { n: m }));
  if (s || !parts.length) parts.push(t("dur.s", { n: s }));
  return parts.slice(0, 2).join(" ");
}
// A clock difference as the station's English writes it (alarmtext.span): tenths of a second under a
// minute, so 30.4 s against a limit of 30 s never reads "30 s", and 0.3 s never "0 s".
function span(ms) {
  const s = Math.abs(ms) / 1000;
  if (s < 60) return t("dur.s", { n: s.toLocaleString(S.lang, { minimumFractionDigits: 1, maximumFractionDigits: 1 }) });
  let whole = Math.floor(s); // whole seconds, cut as the English cuts them (89.6 s is 1 min 29 s)
  const units = [["dur.d", 86400], ["dur.h", 3600], ["dur.min", 60], ["dur.s", 1]];
  const parts = [];
  for (const [key, size] of units) {
    const n = Math.floor(whole / size); whole -= n * size;
    if (n) parts.push(t(key, { n }));
  }
  return parts.slice(0, 2).join(" ");
}
const secs = (ms) => (ms === null || ms === undefined ? "-" : dur(ms));
const short = (id) => (id ? id.slice(0, 10) : "-");
const now = () => Date.now() + S.clockOffset;
// A countdown or a "for how long" that the one-second ticker keeps current (never part of a row's
// signature, so ticking never rebuilds a row).
const countdown = (deadline) => h("span", { class: "countdown", "data-deadline": deadline }, leftText(deadline));
const since = (at) => h("span", { class: "since", "data-since": at }, dur(now() - at));
function leftText(deadline) {
  const left = Number(deadline) - now();
  return left >= 0 ? t("dur.left", { dur: dur(left) }) : t("dur.over", { dur: dur(-left) });
}
function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}
const can = (cap) => !!S.me && S.me.capabilities.includes(cap);

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
// A station that hangs keeps its connections open and never answers: no request may wait forever
// (a watch that never returns would leave the console saying LIVE over a frozen station).
const API_TIMEOUT_MS = 10000;
async function api(method, path, body) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), API_TIMEOUT_MS);
  const opts = { method, headers: {}, credentials: "same-origin", signal: abort.signal };
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  let r, data = null;
  try {
    try { r = await fetch(path, opts); } catch (e) { throw new ApiError(0, t("login.lost")); }
    try { data = await r.json(); } catch (e) {
      if (abort.signal.aborted) throw new ApiError(0, t("login.lost"));
      data = { error: `${r.status} ${r.statusText}` };
    }
  } finally { clearTimeout(timer); }
  if (r.status === 401 && path !== "/api/login") { showLogin(endedText(data.code)); throw new ApiError(401, data.error); }
  if (!r.ok) throw new ApiError(r.status, data.error || `${r.status}`);
  const counts = r.headers.get("Redline-Page"); // a paged view: how many more past this page (docs/API.md)
  if (counts && data && typeof data === "object") PAGES.set(data, JSON.parse(counts));
  return data;
}
const PAGES = new WeakMap(); // a paged view's answer -> its Redline-Page counts
const lineUrl = (what) => `/api/lines/${encodeURIComponent(S.line)}/${what}`;

// -- updating in place -------------------------------------------------------------------------------
// Children of `parent` become one element per item, in order. An item whose signature did not
// change keeps its element (and so the focus, the caret, a half-typed text in it); a changed one
// is rebuilt, with the focus and any typed values carried over to its new element.
function reconcile(parent, items, keyOf, render, sigOf) {
  const old = new Map(), day = utcDay(now()); // a new UTC day redraws each row: its times gain their date (utc)
  for (const el of [...parent.children]) {
    if (el.dataset.key !== undefined) old.set(el.dataset.key, el);
    else el.remove();
  }
  let i = 0;
  for (const item of items) {
    const key = String(keyOf(item));
    const sig = `${S.lang}|${day}|${sigOf ? sigOf(item) : JSON.stringify(item)}`;
    let el = old.get(key);
    if (el && el.dataset.sig === sig) old.delete(key);
    else {
      const fresh = render(item);
      fresh.dataset.key = key;
      fresh.dataset.sig = sig;
      if (el) { carryOver(el, fresh); el.replaceWith(fresh); old.delete(key); }
      el = fresh;
    }
    const at = parent.children[i];
    if (at !== el) parent.insertBefore(el, at || null);
    i++;
  }
  for (const el of old.values()) el.remove();
}
function carryOver(from, to) {
  for (const input of from.querySelectorAll("input[name], textarea[name], select[name]")) {
    const twin = to.querySelector(`[name="${input.name}"]`);
    if (twin && input.type !== "hidden" && input.value) twin.value = input.value;
  }
  const active = document.activeElement;
  if (active && from.contains(active)) {
    const f = active.dataset.focus || (active.name ? `name:${active.name}` : null);
    const twin = f && (f.startsWith("name:") ? to.querySelector(`[name="${f.slice(5)}"]`) : to.querySelector(`[data-focus="${f}"]`));
    if (twin) queueMicrotask(() => twin.focus());
  }
}
function setText(el, text, cls) {
  if (el.textContent !== text) el.textContent = text;
  if (cls !== undefined && el.className !== cls) el.className = cls;
}

// -- sound -------------------------------------------------------------------------------------------
// Browsers start a page's audio only after a person clicked or typed on it. After a reload no one
// has, so the console says plainly that the sound is off and turns it on at the first click or key.
function audioState() { return S.audio ? S.audio.state : "none"; }
function ensureAudio() {
  if (!S.audio) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    S.audio = new Ctx();
    S.audio.addEventListener("statechange", updateSoundFlag);
  }
  return S.audio;
}
function unlockAudio() {
  const ctx = ensureAudio();
  if (ctx && ctx.state !== "running") ctx.resume().then(updateSoundFlag, updateSoundFlag);
  updateSoundFlag();
}
function updateSoundFlag() {
  const off = audioState() !== "running";
  const flag = $("sound-toggle");
  flag.hidden = !off || !S.me;
  document.body.classList.toggle("sound-is-off", off);
}
function tone(ctx, at, freq, length) {
  const osc = ctx.createOscillator(), gain = ctx.createGain();
  osc.type = "square"; osc.frequency.value = freq;
  gain.gain.setValueAtTime(0.18, at);
  gain.gain.setValueAtTime(0, at + length);
  osc.connect(gain).connect(ctx.destination);
  osc.start(at); osc.stop(at + length + 0.02);
}
function playPattern(code) {
  const ctx = S.audio;
  if (!ctx || ctx.state !== "running") return false;
  const t0 = ctx.currentTime + 0.02;
  if (code === "voice_ring") { // a telephone's double ring
    for (const [i, at] of [0, 0.05, 0.1, 0.15, 0.4, 0.45, 0.5, 0.55].entries()) tone(ctx, t0 + at, i % 2 ? 480 : 440, 0.04);
    window.redlineBeeps += 1;
    return true;
  }
  const pattern = ["flash", "connection", "logged_out"].includes(code) ? [880, 660, 880, 660, 880] : [880, 660, 880];
  pattern.forEach((f, i) => tone(ctx, t0 + i * 0.22, f, 0.16));
  window.redlineBeeps += 1;
  return true;
}
// What still sounds: alarm-level conditions nobody silenced. A FLASH repeats every 3 s, any other
// alarm every 6 s, until silenced, acknowledged, answered, or its condition clears.
function soundTick() {
  const loud = S.conditions.filter((c) => c.level === "alarm" && !S.silenced.has(c.key));
  if (!loud.length) return;
  const period = ["flash", "connection", "voice_ring", "logged_out"].includes(loud[0].code) ? 3000 : 6000;
  if (Date.now() - S.lastBeep < period) return;
  if (playPattern(loud[0].code)) S.lastBeep = Date.now();
}
function silence(key) {
  S.silenced.add(key);
  saveSilenced();
  renderAlarms();
}
function saveSilenced() {
  try { sessionStorage.setItem("redline.silenced", JSON.stringify([...S.silenced])); } catch (e) { /* ignore */ }
}
// A SILENCE is for one occurrence (each key names one: "connection:<when lost>", "halted:<since>"):
// once its condition is gone the key goes too, so the next occurrence sounds afresh. Only pruned
// against a list that is whole: live, with the station's conditions fetched.
function pruneSilenced(list) {
  const keys = new Set(list.map((c) => c.key));
  const gone = [...S.silenced].filter((k) => !keys.has(k));
  if (!gone.length) return;
  for (const k of gone) S.silenced.delete(k);
  saveSilenced();
}

// -- login -------------------------------------------------------------------------------------------
// deliberate: the person pressed LOG OUT. Otherwise (the session expired, the station restarted,
// the user was removed) a console that was in use is now watching nothing: an alarm (sound, "‼"
// title, red favicon) until someone logs in, never a calm login page.
// Why a console in use is logged out, in its reader's words: the station's 401 (HTTP, the events
// stream's first answer, or its logout later) says "removed" when the user is off the users list.
const endedText = (code) => t(code === "removed" ? "login.removed" : "login.expired");
function showLogin(message, deliberate) {
  stopMedia();
  if (S.ws) { S.ws.onclose = null; S.ws.onmessage = null; S.ws.close(); S.ws = null; }
  clearTimeout(S.wsRetry); clearInterval(S.refreshTimer); clearInterval(S.watchTimer);
  if (deliberate) { S.loggedOut = null; try { sessionStorage.removeItem("redline.logged_out"); } catch (e) { /* ignore */ } }
  else if (S.me && !S.loggedOut) {
    S.loggedOut = Date.now();
    try { sessionStorage.setItem("redline.logged_out", String(S.loggedOut)); } catch (e) { /* ignore */ }
  }
  S.live = false; S.me = null; S.watch = null; S.conditions = currentConditions();
  $("login-alarm").hidden = !S.loggedOut;
  document.body.classList.remove("stale");
  $("console").hidden = true; $("top").hidden = true; $("alarm-area").hidden = true;
  $("login-screen").hidden = false;
  $("login-error").replaceChildren(...[].concat(message || [])); // the console's words, or a lead and the station's own
  $("login-password").value = "";
  updateSoundFlag(); updateTitle();
}
// Why a login failed, in the reader's language: a wrong name or password (401) in the console's
// words; any other refusal (a lockout) with the console's lead and the station's own English words.
function loginRefusal(e) {
  if (e.status === 401) return [t("login.wrong")];
  return e.status ? [t("login.refused"), " ", said(e.message, "en")] : [e.message];
}
async function login(ev) {
  ev.preventDefault();
  unlockAudio();
  $("login-error").textContent = "";
  $("login-submit").disabled = true;
  try {
    const me = await api("POST", "/api/login", { user: $("login-user").value, password: $("login-password").value });
    await start(me);
  } catch (e) {
    $("login-error").replaceChildren(...loginRefusal(e));
  } finally {
    $("login-submit").disabled = false;
    $("login-password").value = "";
  }
}
async function start(me) {
  S.me = me;
  S.loggedOut = null;
  try { sessionStorage.removeItem("redline.logged_out"); } catch (e) { /* ignore */ }
  $("login-alarm").hidden = true;
  S.lastCounters = "";
  try { S.settings = await api("GET", "/api/console/settings"); } catch (e) { S.settings = { lang: S.lang, station_lang: "en" }; }
  S.lang = S.settings.lang in window.REDLINE_STRINGS ? S.settings.lang : "en";
  $("login-screen").hidden = true; $("console").hidden = false; $("top").hidden = false; $("alarm-area").hidden = false;
  $("station-name").textContent = me.station;
  for (const el of document.querySelectorAll(".operate")) el.hidden = !can("operate");
  $("translate-translator").value = me.user;
  const base = (S.settings.station_lang || "en").split("-")[0];
  $("translate-lang").value = ["en", "ru"].includes(base) ? base : S.lang;
  applyStatic();
  ensureAudio(); updateSoundFlag(); updateNotifyButton();
  initMap();
  connect();
  clearInterval(S.refreshTimer); clearInterval(S.watchTimer);
  S.refreshTimer = setInterval(refreshViews, 5000);
  S.watchTimer = setInterval(refreshWatch, 1000);
  runVerify();
}

// -- live events -------------------------------------------------------------------------------------
function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/events`);
  S.ws = ws;
  S.lastHeard = Date.now(); // a handshake that never completes is silence too (watchdog)
  ws.binaryType = "arraybuffer"; // the peer's voice audio (voiceIn)
  ws.onmessage = (m) => {
    S.lastHeard = Date.now();
    if (typeof m.data !== "string") { voiceIn(m.data); return; }
    const msg = JSON.parse(m.data);
    if (msg.type === "hello") {
      S.heartbeat = Number(msg.heartbeat_seconds) || S.heartbeat;
      setConnection(true);
      S.alarmLog = []; $("alarms").replaceChildren(); // hello brings the latest 20 again, also after a reconnect
      for (const a of msg.alarms) addAlarm(a);
      setStatus(msg.status, msg.now);
      refreshWatch();
    } else if (msg.type === "status") setStatus(msg.status, msg.now);
    else if (msg.type === "alarm") { addAlarm(msg.alarm); refreshWatch(); }
    else if (msg.type === "tick") { if (msg.now) S.clockOffset = msg.now - Date.now(); }
    else if (msg.type === "logout") showLogin(endedText(msg.code));
    else if (msg.type === "error") {
      showLogin(msg.status === 401 ? endedText(msg.code) : [t("login.refused"), " ", said(msg.error, "en")]);
    }
    else if (msg.type === "joined" || msg.type === "join_refused" || msg.type === "audio_refused") voiceNote(msg);
  };
  ws.onopen = () => { if (V.call) voiceSend({ type: "join", call: V.call }); }; // back on the call after a reconnect
  ws.onclose = (ev) => {
    if (ev.code === 4401 || ev.code === 4403) { showLogin(t("login.lost")); return; }
    S.ws = null;
    setConnection(false);
    S.wsRetry = setTimeout(connect, 2000);
  };
}
// The station says something at least every heartbeat (a "tick" when nothing changed); silence for
// HEARTBEAT_MISSES of them is a station that hangs (a stopped process keeps the socket open, so no
// close ever comes): the connection is lost, the alarm sounds, and the console reconnects.
const HEARTBEAT_MISSES = 3;
function watchdog() {
  if (!S.me || !S.ws) return;
  if (Date.now() - S.lastHeard > HEARTBEAT_MISSES * S.heartbeat * 1000) connectionLost();
}
function connectionLost() {
  if (S.ws) { S.ws.onclose = null; S.ws.onmessage = null; S.ws.close(); S.ws = null; }
  setConnection(false);
  clearTimeout(S.wsRetry);
  S.wsRetry = setTimeout(connect, 2000);
}
function setConnection(up) {
  if (!up && (S.live || !S.lostAt)) S.lostAt = Date.now(); // one occurrence: one key, one SILENCE
  if (up && !S.live) S.asOf = null;
  if (!up && S.live) S.asOf = S.lastHeard || Date.now();
  S.live = up;
  document.body.classList.toggle("stale", !up && !!S.me);
  const note = $("stale-note");
  note.hidden = up || !S.me;
  if (!note.hidden) note.textContent = t("stale.as_of", { at: utc((S.asOf || Date.now()) + S.clockOffset) });
  if (S.status) renderLine();
  setText($("connection"), t(up ? "conn.live" : "conn.lost"), `conn ${up ? "live" : "lost"}`);
  $("connection").dataset.i18n = up ? "conn.live" : "conn.lost";
  renderAlarms();
}

// The station's alarm log. Each alarm comes as a code and its params (redline/alarmtext.py) with the
// station's English text: in English the station's text, in another language the console's template
// for the code ("alarm.<code>", strings.js), the params put in as text (what the peer or a person
// wrote, through said(); free English, such as an error's message, marked lang="en"); a code with no
// template here (a newer station's) is the station's English text. Either way without the
// command-line hints the terminal gets: at the console the button is on the page. The last 100 are
// kept (S.alarmLog) and redrawn when the language changes.
const ALARM_LOG_KEPT = 100;
const CLI_HINT = /\s*\('?redline [^)]*\)/g;
// The params that are free English (an exception's message, a describe()): alarmtext.EN_PARAMS.
const ALARM_EN_PARAMS = new Set(["exc", "why", "what", "details", "problem", "reason", "runs"]);
// The params that are a list of the conflicts a notice meets (alarmtext.CONFLICT_PARAMS): each a
// record written by "conflict.ours"/"conflict.peer", then "conflict.more" for those of `count` not named.
const ALARM_CONFLICT_PARAMS = new Set(["named"]);
// Escalation levels and roles (FLASH's first level, a ROSTER's role change), protocol words we translate.
const ALARM_WORD_PARAMS = new Set(["level", "role", "old", "new"]);
// A time (wall ms; also a conflict's start and end) and a clock difference (ms), which the station's
// English writes in words: alarmtext.TIME_PARAMS and SPAN_PARAMS.
const ALARM_TIME_PARAMS = new Set(["at", "start", "end"]);
const ALARM_SPAN_PARAMS = new Set(["span"]);
function alarmParam(key, value, count) {
  if (Array.isArray(value) && ALARM_CONFLICT_PARAMS.has(key)) return alarmConflicts(value, count);
  if (typeof value === "number" && ALARM_TIME_PARAMS.has(key)) return utc(value);
  if (typeof value === "number" && ALARM_SPAN_PARAMS.has(key)) return span(value);
  if (typeof value === "number") return value.toLocaleString(S.lang, { useGrouping: false, maximumFractionDigits: 3 });
  const text = String(value ?? "");
  if (ALARM_WORD_PARAMS.has(key)) { // an escalation level or a role: in the reader's words when it is one we know
    const word = STR()[`escalation.${text}`] || STR()[`role.${text}`];
    if (word) return word;
  }
  // a notice's kind (air, strike, …: lower case) in the reader's words; an envelope's (NOTICE) is a protocol word
  if (key === "kind" && STR()[`kinds.${text}`]) return STR()[`kinds.${text}`];
  return ALARM_EN_PARAMS.has(key) ? said(text.replace(CLI_HINT, ""), "en") : said(text, null);
}
// The conflicts named (records: the other notice's side, kind and seq, metres apart, margin, window,
// band), each in the reader's words with its values put in as alarmParam puts them, then how many of
// `count` are not named: as alarmtext._conflicts writes them in English.
function alarmConflicts(named, count) {
  const out = [];
  for (const c of named) {
    const fields = {};
    for (const [k, v] of Object.entries(c && typeof c === "object" ? c : {})) fields[k] = alarmParam(k, v);
    if (out.length) out.push("; ");
    out.push(...tx(c && c.ours ? "conflict.ours" : "conflict.peer", fields));
  }
  const rest = (typeof count === "number" ? count : 0) - named.length;
  if (rest > 0) out.push(out.length ? "; " : "", ...tx("conflict.more", { n: alarmParam("n", rest) }));
  return h("span", {}, out);
}
function alarmWords(a) {
  const key = `alarm.${a.code}`;
  if (S.lang === "en" || !a.code || STR()[key] === undefined) return [said(String(a.text).replace(CLI_HINT, ""), "en")];
  const params = {};
  for (const [k, v] of Object.entries(a.params || {})) params[k] = alarmParam(k, v, a.params.count);
  return tx(key, params);
}
function alarmRow(a) {
  return h("li", { class: a.level, dataset: { code: a.code || "" } }, h("span", { class: "time" }, `${utc(a.time, true)} `),
    ...alarmWords(a), a.count > 1 ? ` ×${a.count}` : "");
}
function addAlarm(a) {
  S.alarmLog.push(a);
  if (S.alarmLog.length > ALARM_LOG_KEPT) S.alarmLog.shift();
  const list = $("alarms");
  list.prepend(alarmRow(a));
  while (list.children.length > ALARM_LOG_KEPT) list.lastChild.remove();
}
function renderAlarmLog() {
  $("alarms").replaceChildren(...S.alarmLog.map(alarmRow).reverse());
}

// -- conditions: the alarm area, the title, the favicon, notifications -------------------------------
async function refreshWatch() {
  if (!S.line || !S.me) return;
  try {
    S.watch = await api("GET", lineUrl("watch"));
    S.clockOffset = S.watch.now - Date.now();
  } catch (e) {
    if (e.status === 401) return;
    if (e.status === 0 && S.live) connectionLost(); // no answer (or none in time): not live
  }
  renderAlarms();
  renderLineExtras();
  refreshVoice();
  if (S.views.tests) renderTests(S.views.tests); // a test whose window closed meanwhile loses its ANSWER
}
const SESSION_WARN_MS = 15 * 60 * 1000; // warn this long before the session ends (api.session_seconds)
function currentConditions() {
  const list = [];
  if (!S.me && S.loggedOut) list.push({ code: "logged_out", key: `logged_out:${S.loggedOut}`, level: "alarm", rank: -2, params: {} });
  if (S.me && !S.live) list.push({ code: "connection", key: `connection:${S.lostAt}`, level: "alarm", rank: -1, params: {} });
  if (S.watch && S.live) list.push(...S.watch.conditions);
  // The session's end (real time: the station's session clock is time.time, not its settable wall).
  if (S.me && S.me.expires && S.me.expires - Date.now() < SESSION_WARN_MS) {
    list.push({ code: "session_ending", key: `session_ending:${S.me.expires}`, level: "warning", rank: 99,
      params: { expires: S.me.expires } });
  }
  return list;
}
function conditionText(c) {
  const peer = S.watch ? S.watch.peer : "";
  const p = c.params || {};
  switch (c.code) {
    case "flash": return [...tx("cond.flash", { peer, seq: p.seq, deadline: utc(p.deadline), left: countdown(p.deadline) }), ": ",
      said(p.text, p.lang, "q")];
    case "line_down": return tx("cond.line_down", { peer, dur: since(c.since) });
    case "test_missed": return tx(`cond.test_missed.${p.side}`, { peer });
    case "test_to_answer": return tx(p.overdue ? "cond.test_overdue" : "cond.test_to_answer", { peer, deadline: utc(p.deadline), left: countdown(p.deadline) });
    case "clock_skew": return tx("cond.clock_skew", { peer, dur: dur(p.skew_ms), limit: dur(p.limit_ms),
      way: t(p.skew_ms > 0 ? "cond.clock_skew.ahead" : "cond.clock_skew.behind") });
    case "notice_conflict": return tx("cond.notice_conflict", { n: p.count });
    case "call_request": return [...tx("cond.call_request", { peer, from: said(p.from_role, p.lang), to: said(p.to_role, "en") }),
      said(p.subject, p.lang)];
    case "flash_unacked": return tx("cond.flash_unacked", { seq: p.seq });
    case "flash_more": return tx("cond.flash_more", { n: p.count });
    case "session_ending": return tx("cond.session_ending", { at: utc(p.expires + S.clockOffset), left: countdown(p.expires + S.clockOffset) });
    case "voice_ring": return tx(p.test ? "cond.voice_ring_test" : "cond.voice_ring", { peer, caller: said(p.caller, null),
      deadline: utc(p.deadline), left: countdown(p.deadline) });
    default: return tx(`cond.${c.code}`, { peer });
  }
}
function renderAlarms() {
  const list = currentConditions();
  S.conditions = list;
  if (S.me && S.live && S.watch) pruneSilenced(list);
  const area = $("alarm-list");
  if (!list.length) {
    reconcile(area, [{ code: "none" }], () => "none",
      () => h("li", { class: "alarm-none" }, t("alarms.none")), () => "none");
  } else {
    reconcile(area, list.map((c, i) => ({ ...c, first: i === 0 })), (c) => c.key, renderCondition,
      (c) => JSON.stringify([c.first, c.params, c.since, S.silenced.has(c.key), S.me && S.me.capabilities]));
  }
  for (const c of list.filter((x) => x.level === "alarm" && !S.notified.has(x.key))) { S.notified.add(c.key); notify(c); }
  $("alarm-area").className = `alarm-area ${list.length ? (list[0].level === "alarm" ? "has-alarm" : "has-warning") : "calm"}`;
  updateTitle();
  soundTick();
}
function renderCondition(c) {
  const silenced = S.silenced.has(c.key);
  const cls = `cond ${c.level} ${c.first ? "first" : "rest"}${c.code === "flash" ? " flashing" : ""}${silenced ? " silenced" : ""}`;
  const buttons = [];
  if (c.code === "flash" && can("operate")) {
    buttons.push(h("button", { type: "button", class: "danger", "data-focus": "cond-ack", onclick: (e) => ackFlash(c.params.id, e.target) },
      t("act.ack", { user: S.me.user })));
  }
  if (c.code === "test_to_answer" && can("operate")) {
    buttons.push(h("button", { type: "button", class: "go", "data-focus": "cond-answer", onclick: (e) => answerTest(c.params.id, e.target) },
      t("act.answer", { user: S.me.user })));
  }
  if (c.code === "voice_ring" && can("operate")) {
    buttons.push(h("button", { type: "button", class: "go", "data-focus": "cond-pickup", onclick: (e) => pickUp(c.params.id, e.target) },
      t("voice.pickup", { user: S.me.user })));
    buttons.push(h("button", { type: "button", class: "danger", "data-focus": "cond-decline", onclick: (e) => declineCall(c.params.id, e.target) },
      t("voice.decline")));
  }
  if (c.code === "root_rotation" && can("confirm")) {
    buttons.push(h("button", { type: "button", class: "danger", "data-focus": "cond-root", onclick: openRoot }, t("root.open")));
  }
  if (c.level === "alarm" && !silenced) {
    buttons.push(h("button", { type: "button", "data-focus": "cond-silence", onclick: () => silence(c.key) }, t("alarms.silence")));
  }
  return h("li", { class: cls, "data-code": c.code },
    h("span", { class: "cond-text" }, conditionText(c)),
    silenced ? h("span", { class: "cond-silenced" }, ` (${t("alarms.silenced")})`) : null,
    buttons.length ? h("span", { class: "cond-actions" }, buttons) : null);
}
function updateTitle() {
  const list = S.me || S.loggedOut ? S.conditions : [];
  const alarms = list.filter((c) => c.level === "alarm");
  const base = S.me ? `${S.me.station} — ${t("title")}` : t("title");
  if (!list.length) document.title = base;
  else {
    const n = list.reduce((sum, c) => sum + (c.code === "flash_more" ? c.params.count : 1), 0); // the real number waiting
    document.title = `${alarms.length ? "‼ " : ""}${t("short." + list[0].code)}${n > 1 ? ` (+${n - 1})` : ""} — ${base}`;
  }
  // Green means watched and calm: never while logged out or not live.
  setFavicon(alarms.length ? "#ff3b3b" : list.length ? "#ffc400" : S.me && S.live ? "#2ee66b" : "#8a8a8a",
    alarms.length || list.length);
}
let lastIcon = "";
function setFavicon(color, count) {
  const sig = `${color}:${count}`;
  if (sig === lastIcon) return;
  lastIcon = sig;
  const c = document.createElement("canvas");
  c.width = c.height = 64;
  const g = c.getContext("2d");
  if (!g) return;
  g.fillStyle = color; g.beginPath(); g.arc(32, 32, 30, 0, Math.PI * 2); g.fill();
  if (count) {
    g.fillStyle = "#000"; g.font = "bold 40px sans-serif"; g.textAlign = "center"; g.textBaseline = "middle";
    g.fillText(count > 9 ? "!" : String(count), 32, 34);
  }
  $("favicon").href = c.toDataURL("image/png");
}
function notify(c) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    // A FLASH's notification acknowledges it when clicked (PagerDuty's "acknowledge from the
    // notification"), signed as the person logged in here, and says so in its own words.
    const ackable = c.code === "flash" && can("operate");
    const text = $("alarm-list").querySelector(`[data-key="${CSS.escape(c.key)}"] .cond-text`)?.textContent || t("short." + c.code);
    const n = new Notification(`${t("short." + c.code)} — ${S.me ? S.me.station : "redline"}`, {
      body: ackable ? `${text}\n${t("notify.click_ack", { user: S.me.user })}` : text,
      tag: c.key, requireInteraction: c.code === "flash",
    });
    n.onclick = () => {
      window.focus(); n.close();
      if (ackable && S.conditions.some((x) => x.key === c.key)) ackFlash(c.params.id, null);
    };
    window.redlineNotifications += 1;
  } catch (e) { /* a browser that allows only service-worker notifications */ }
}
function updateNotifyButton() {
  const b = $("notify-enable");
  b.hidden = !("Notification" in window) || Notification.permission !== "default" || !S.me;
}

// -- status ------------------------------------------------------------------------------------------
function lineWord(ln) {
  if (ln.halted) return ["state.halted", "bad"];
  if (!ln.active) return ["state.waiting", "wait"];
  return ln.synced ? ["state.in_sync", "good"] : ["state.not_in_sync", "bad"];
}
function setStatus(status, at) {
  S.status = status;
  if (at) S.clockOffset = at - Date.now();
  const sel = $("line-select");
  const ids = status.lines.map((l) => l.line);
  if (sel.options.length !== ids.length || [...sel.options].some((o, i) => o.value !== ids[i])) {
    sel.replaceChildren(...status.lines.map((l) => h("option", { value: l.line }, `${l.peer} · ${l.line.slice(0, 8)}`)));
    if (!ids.includes(S.line)) { S.line = ids[0] || null; setExportLink(); refreshWatch(); }
    sel.value = S.line;
  }
  renderLine();
  const ln = status.lines.find((l) => l.line === S.line);
  const counters = ln ? `${ln.line}:${ln.our_seq}:${ln.their_seq}:${ln.outbox}:${ln.unreceipted}` : "";
  if (counters !== S.lastCounters) { S.lastCounters = counters; refreshViews(); }
}
function renderLine() {
  const status = S.status;
  if (!status) return;
  const ln = status.lines.find((l) => l.line === S.line);
  if (!ln) { setText($("line-state"), t("state.no_line"), "state-word wait"); return; }
  const [word, cls] = S.live ? lineWord(ln) : ["state.unknown", "wait"]; // what it was is not what it is
  setText($("line-state"), t(word), `state-word ${cls}`);
  setText($("line-peer"), t("state.with", { peer: ln.peer, lang: ln.peer_lang }));
  setText($("line-counters"), t("state.counters", { ours: ln.our_seq, theirs: ln.their_seq, outbox: ln.outbox, unreceipted: ln.unreceipted }));
  const limit = S.watch ? S.watch.skew_limit_ms : null;
  reconcile($("paths"), Object.entries(ln.paths).sort(), ([name]) => name, ([name, p]) => {
    const over = limit !== null && p.skew_ms !== null && Math.abs(p.skew_ms) > limit;
    return h("tr", {},
      h("td", {}, name),
      h("td", { class: p.up ? "good state" : "bad state" }, t(p.up ? "paths.up" : "paths.down")),
      h("td", {}, p.rtt_ms === null ? "-" : `${p.rtt_ms.toFixed(1)} ${t("unit.ms")}`),
      h("td", { class: over ? "bad" : "" }, p.skew_ms === null ? "-" : `${p.skew_ms >= 0 ? "+" : "−"}${dur(p.skew_ms)}`),
      h("td", {}, p.up ? utc(p.last_rx) : said(p.reason || "-", "en")));
  }, ([, p]) => JSON.stringify([p.up, p.rtt_ms === null ? null : Math.round(p.rtt_ms), p.skew_ms === null ? null : Math.round(p.skew_ms / 1000),
    p.up ? Math.floor((p.last_rx || 0) / 5000) : p.reason, limit]));
  const confirm = $("confirm-form");
  confirm.hidden = ln.active || ln.confirmed.local || !can("confirm");
  if (!confirm.hidden) setText($("confirm-note"), t("confirm.note", { code: ln.safety_code }));
  renderRoot(ln);
  renderLineExtras();
}

// -- the peer's root rotation (PROTOCOL.md 5.9 ROOT) ---------------------------------------------------
// While the status has the line's root_code, the peer's new root is not trusted here: a banner says
// so, and a person who may confirm opens the dialog, compares the code with the peer by voice and
// types it (POST confirm-root). The peer's name is the peer's data: text nodes only.
function renderRoot(ln) {
  const banner = $("root-banner"), done = $("root-done");
  if (!ln || done.dataset.line !== ln.line) done.hidden = true; // the word on another line's confirmation
  if (!ln || !ln.root_code) { banner.hidden = true; banner.dataset.sig = ""; return; }
  const may = can("confirm");
  const sig = `${ln.line}|${ln.peer}|${ln.root_code}|${S.lang}|${may}`;
  if (banner.dataset.sig !== sig) {
    banner.dataset.sig = sig;
    $("root-banner-text").replaceChildren(...tx("root.banner", { peer: ln.peer }),
      may ? "" : ` ${t("root.banner_who", { role: t("role." + S.me.role) })}`);
  }
  $("root-open").hidden = !may;
  done.hidden = true; // a new rotation: the last confirmation's word is old news
  banner.hidden = false;
}
function openRoot() {
  const ln = S.status && S.status.lines.find((l) => l.line === S.line);
  if (!ln || !ln.root_code || !can("confirm")) return;
  const d = $("root-dialog");
  d.dataset.line = ln.line;
  d.dataset.peer = ln.peer;
  $("root-dialog-what").textContent = t("root.what", { peer: ln.peer });
  $("root-dialog-code").textContent = t("root.code_here", { code: ln.root_code });
  $("root-code").value = "";
  setText($("root-result"), "", "result");
  d.showModal();
  $("root-code").focus();
}
async function confirmRoot(ev) {
  ev.preventDefault();
  const d = $("root-dialog"), form = ev.target, out = $("root-result"), peer = d.dataset.peer || "";
  if (form.dataset.busy) return; // a second press while the first is in flight
  form.dataset.busy = "1";
  $("root-submit").disabled = true;
  try {
    const r = await api("POST", `/api/lines/${encodeURIComponent(d.dataset.line)}/confirm-root`, { code: $("root-code").value });
    d.close();
    setText($("root-done"), t("root.confirmed", { peer, version: r.confirmed_version }), "result good root-done");
    $("root-done").dataset.line = d.dataset.line;
    await refreshStatus();
    $("root-done").hidden = false;
  } catch (e) {
    // 400: the code differs (the station filed nothing); 409: nothing awaits (confirmed meanwhile).
    if (e.status === 400) setText(out, t("root.wrong", { peer }), "result bad");
    else if (e.status === 409) { setText(out, t("root.none", { peer }), "result wait"); refreshStatus(); }
    else showRefused(out, e);
  } finally {
    delete form.dataset.busy;
    $("root-submit").disabled = false;
  }
}
async function refreshStatus() {
  try { const s = await api("GET", "/api/status"); setStatus(s, s.now); }
  catch (e) { /* the WebSocket brings the next status anyway */ }
}
// Line down for how long, and the clock skew against the limit (from /watch).
function renderLineExtras() {
  const w = S.watch;
  const down = $("line-down");
  const ln = S.status && S.status.lines.find((l) => l.line === S.line);
  const isDown = ln && !Object.values(ln.paths).some((p) => p.up);
  if (w && isDown) {
    const key = `${w.down_since}|${S.lang}`;
    if (down.dataset.sig !== key) {
      down.dataset.sig = key;
      const from = w.down_since || now();
      down.replaceChildren(...tx(w.down_since ? "state.down_for" : "state.down_never", { dur: since(from), at: utc(w.down_since, true) }));
    }
    down.hidden = false;
  } else { down.hidden = true; down.dataset.sig = ""; }
  const skew = $("line-skew");
  if (w && w.skew_ms !== null) {
    const over = Math.abs(w.skew_ms) > w.skew_limit_ms;
    setText(skew, t("state.skew", { skew: dur(w.skew_ms), limit: dur(w.skew_limit_ms) }), `skew ${over ? "bad" : "dim"}`);
  } else setText(skew, "");
}

// -- views -------------------------------------------------------------------------------------------
// The station answers a page of each of these (docs/API.md, "Pages"): what still needs a person first
// (FLASHes not acknowledged, tests pending, requests open), then the newest; never the whole history.
const PAGE = 100;
const page = (what) => api("GET", `${lineUrl(what)}?limit=${PAGE}${S.offsets[what] ? `&offset=${S.offsets[what]}` : ""}`);
// Under a panel: how many more its view holds past this page ("12 more"), with NEXT PAGE, and FIRST
// PAGE once past the first. The counts are the station's (the Redline-Page header), never guessed here.
function renderMore(what, view) {
  const el = $(`${what}-more`);
  const counts = PAGES.get(view);
  const at = S.offsets[what] || 0;
  const more = counts ? Math.max(0, ...Object.values(counts).map((c) => c.more)) : 0;
  const sig = `${S.lang}|${at}|${more}`;
  el.hidden = !more && !at;
  if (el.dataset.sig === sig) return;
  el.dataset.sig = sig;
  const go = (offset) => { S.offsets[what] = offset; el.dataset.sig = ""; refreshViews(); };
  el.replaceChildren(...[
    more ? h("span", { class: "wait" }, t("page.more", { n: more })) : null,
    at ? h("span", { class: "summary" }, ` ${t("page.from", { n: at + 1 })} `) : null,
    more ? h("button", { type: "button", class: "small page-next", "data-focus": `next-${what}`,
      onclick: () => go(at + PAGE) }, t("page.next")) : null,
    at ? h("button", { type: "button", class: "small page-first", "data-focus": `first-${what}`, onclick: () => go(0) },
      t("page.first")) : null].filter(Boolean)); // replaceChildren writes a null as the text "null"
}
let refreshing = false, again = false;
async function refreshViews() {
  if (!S.line || !S.me) return;
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    const [log, flash, tests, calls, notices, requests, translations] = await Promise.all([
      fetchLog(), page("flash"), page("tests"), page("calls"), page("notices"), page("requests"),
      page("translations"),
    ]);
    S.views = { log, flash, tests, calls, notices, requests, translations };
    rerenderAll();
    window.redlineRefreshes += 1;
  } catch (e) {
    if (e.status !== 401) console.warn("refresh failed", e);
  } finally {
    refreshing = false;
    if (again) { again = false; refreshViews(); }
  }
}
function rerenderAll() {
  const v = S.views;
  renderLine();
  renderAlarms();
  renderAlarmLog();
  if (!v.log) return;
  S.langOf = new Map(v.log.rows.map((r) => [r.id, r.lang]));
  renderLog(v.log, v.translations); renderFound(v.log); renderFlash(v.flash); renderTests(v.tests);
  renderCalls(v.calls, v.requests); renderNotices(v.notices);
  renderMore("flash", v.flash); renderMore("tests", v.tests); renderMore("requests", v.requests);
  renderMore("notices", v.notices);
  if (S.verify) renderVerify(S.verify);
}

// What an envelope says, in the reader's words around what its author wrote.
function describe(r) {
  const c = r.content || {};
  const lang = r.lang || (r.ours && S.settings ? S.settings.station_lang : null);
  const by = c.person && c.person.name ? c.person.name : "?";
  switch (r.kind) {
    case "TEXT": case "FLASH": case "TEST": return [said(c.text ?? r.text, lang)];
    case "CALL_REQUEST": return tx("kind.call_request", {
      from: said(c.from_role, lang), to: said(c.to_role, lang), subject: said(c.subject, lang),
      windows: (Array.isArray(c.windows) && c.windows.length ? c.windows.map((w) => `${utc(w[0], true)} – ${utc(w[1])}`).join("; ") : t("kind.none")),
      expires: utc(c.expires, true) });
    case "CALL_REPLY": return c.answer === "accept" ? tx("kind.call_reply.accept", { time: utc(c.time, true) })
      : [...tx("kind.call_reply.decline"), c.reason ? ": " : "", c.reason ? said(c.reason, lang) : null];
    case "CALL_EXPIRED": return tx("kind.call_expired");
    case "CALL_RECORD": return tx("kind.call_record", { principals: said((c.principals || []).join(" ↔ "), lang),
      start: utc(c.start, true), end: utc(c.end) });
    case "READOUT": return [...tx("kind.readout"), ": ", said(c.text, lang)];
    case "TEST_ANSWER": return [...tx("kind.test_answer", { by }), c.text ? ": " : "", c.text ? said(c.text, lang) : null];
    case "TEST_RESULT": return tx("kind.test_result", { result: t(`result.${c.result}`) });
    case "NOTICE": return [...tx("kind.notice", { kind: t(`kinds.${c.kind}`), start: utc(c.start, true), end: utc(c.end, true),
      floor: c.floor_m, ceiling: c.ceiling_m }), c.text ? ": " : "", c.text ? said(c.text, lang) : null];
    case "NOTICE_WITHDRAW": return tx("kind.notice_withdraw");
    case "ACK": return tx("kind.ack", { by });
    case "TRANSLATION": return [...tx("kind.translation", { lang: c.lang }), ": ", said(c.text, c.lang)];
    case "ROSTER": return tx("kind.roster", { names: (c.users || []).map((u) => u && u.name).join(", ") });
    case "ESCALATED": return tx("kind.escalated", { level: escLevel(c.level) });
    default: return [said(r.text, "en")]; // a kind this console does not know: the station's summary
  }
}
const TRANSLATABLE = new Set(["TEXT", "FLASH", "READOUT", "NOTICE", "CALL_REQUEST", "CALL_REPLY", "TEST"]);

function renderLog(log, translations) {
  const rows = [...log.outbox].reverse().map((r) => ({ ...r, key: `outbox:${r.outbox}` }))
    .concat([...log.rows].reverse().map((r) => ({ ...r, key: r.id })));
  reconcile($("log"), rows, (r) => r.key, (r) => {
    const trs = (r.id && translations[r.id]) || [];
    const ack = r.ack ? (r.ack.by ? t("log.acked", { by: r.ack.by }) : t(`ack.${r.ack.state}`)) : "";
    const receipt = r.outbox ? t("log.outbox") : r.ours ? t(r.receipted ? "log.receipted" : "log.not_receipted") : t("log.stored");
    return h("tr", { class: `${r.priority === "FLASH" ? "flash" : ""}${r.outbox ? " outbox" : ""}`, "data-id": r.id || null },
      // date over time, and the kind's name over its priority and protocol name: the text gets the width
      h("td", { class: "when" }, h("span", { class: "date" }, utc(r.stored_at, true).slice(0, 10)), " ", utc(r.stored_at, true).slice(11)),
      h("td", {}, r.ours ? t("log.us") : r.from), h("td", {}, r.seq ?? "-"),
      h("td", { class: "kind", "data-kind": r.kind }, kindName(r.kind),
        r.priority && r.priority !== "ROUTINE" ? h("span", { class: "prio" }, t(`prio.${r.priority.toLowerCase()}`)) : null,
        h("span", { class: "raw", lang: "en" }, r.kind)),
      h("td", { class: "text" }, describe(r),
        trs.map((x) => h("div", { class: "translation" }, h("span", { class: "dim" }, t("log.translation", { lang: x.lang, by: x.translator }), " "),
          said(x.text, x.lang))),
        r.id && TRANSLATABLE.has(r.kind) && can("operate")
          ? h("button", { type: "button", class: "small", "data-focus": "translate", onclick: () => openTranslate(r) }, t("log.translate")) : null),
      h("td", { class: r.outbox ? "wait receipt" : r.receipted || !r.ours ? "good receipt" : "wait receipt" }, receipt),
      h("td", { class: r.ack ? (r.ack.by ? "good ack" : r.ack.state === ACK_SENDING ? "wait ack" : "bad ack") : "ack" }, ack));
  }, (r) => JSON.stringify([r.receipted, r.ack, r.seq, ((r.id && translations[r.id]) || []).length]));
}
function openTranslate(r) {
  const form = $("translate-form");
  form.hidden = false;
  $("translate-pick").hidden = true;
  $("translate-ref").value = r.id;
  $("translate-orig-label").textContent = t("tr.original", { lang: r.lang || "?" });
  $("translate-orig").replaceChildren(...describe(r));
  $("translate-text").focus();
}

// The station's state of a FLASH (ops/flash.py Flash.state): our ACK accepted into the outbox and not
// signed yet (the line down) is "acknowledged, sending": not waiting, and no button to press again.
const ACK_SENDING = "acknowledged, sending";
function renderFlash(flashes) {
  const waiting = flashes.filter((f) => !f.ours && !f.acked_by);
  const box = $("flash-waiting");
  if (!waiting.length) reconcile(box, [0], () => "none", () => h("div", { class: "summary" }, t("flash.none")), () => "none");
  else reconcile(box, waiting, (f) => f.id, (f) => f.state === ACK_SENDING
    ? h("div", { class: "flash-item sending", "data-id": f.id },
      h("div", { class: "wait" }, t("ack.acknowledged, sending"), " — ", t("flash.sending", { seq: f.seq })),
      said(f.text || "", S.langOf.get(f.id), "div"))
    : h("div", { class: "flash-item", "data-id": f.id },
      h("div", { class: "bad" }, tx("flash.incoming", { seq: f.seq, deadline: utc(f.deadline), left: countdown(f.deadline) })),
      said(f.text || "", S.langOf.get(f.id), "div"),
      f.escalations.length ? h("div", { class: "wait" }, t("flash.escalated", { levels: f.escalations.map((e) => escLevel(e.level)).join(", ") })) : null,
      can("operate") ? h("button", { class: "danger ack-button", type: "button", "data-focus": "ack", onclick: (e) => ackFlash(f.id, e.target) },
        t("act.ack", { user: S.me.user })) : h("div", { class: "summary" }, t("flash.cannot"))),
  (f) => JSON.stringify([f.escalations, f.state]));
  reconcile($("flash-history"), [...flashes].reverse().slice(0, 20), (f) => f.id, (f) => h("tr", {},
    h("td", {}, t(f.ours ? "flash.out" : "flash.in")), h("td", {}, f.seq), h("td", {}, said(f.text || "", S.langOf.get(f.id))),
    h("td", {}, utc(f.receipted_at)), h("td", {}, f.escalations.map((e) => escLevel(e.level)).join(", ") || "-"),
    h("td", { class: f.acked_by ? "good" : f.state === ACK_SENDING ? "wait" : "bad" },
      f.acked_by ? `${f.acked_by} ${utc(f.acked_at)}` : t(`ack.${f.state}`))),
  (f) => JSON.stringify([f.receipted_at, f.escalations, f.acked_by, f.state]));
}

// One press files once: the button is disabled while in flight and the API's idempotency is per
// person and FLASH (or test), so a second press returns the first acknowledgement.
async function ackFlash(id, button) {
  if (button) button.disabled = true;
  try { await api("POST", lineUrl("ack"), { flash_id: id }); S.silenced.add(`flash:${id}`); }
  catch (e) { showFailure(button, e); }
  finally { if (button) button.disabled = false; refreshWatch(); refreshViews(); }
}
async function answerTest(id, button) {
  if (button) button.disabled = true;
  try { await api("POST", lineUrl("answer"), { test_id: id }); }
  catch (e) { showFailure(button, e); }
  finally { if (button) button.disabled = false; refreshWatch(); refreshViews(); }
}
function showFailure(button, e) {
  const where = button && button.parentElement;
  if (!where) return;
  let out = where.querySelector(".result");
  if (!out) { out = h("span", { class: "result bad", role: "status" }); where.append(out); }
  showRefused(out, e);
}

// Why a request was refused: the console's lead in the reader's language, then the station's own
// words, which are English (marked lang="en", and isolated: they may quote what a peer wrote). A
// request that got no answer says so in the reader's language (status 0).
function showRefused(out, e) {
  out.replaceChildren(t("result.refused"), " ", e.status ? said(e.message, "en") : e.message);
  out.className = "result bad";
}

function renderTests(tv) {
  // The tester decides a miss: past our copy of the deadline the test is overdue and may still be
  // answered; once the tester's verdict says missed (a test_missed condition), ANSWER is gone.
  const n = now();
  const missed = new Set((S.watch ? S.watch.conditions : []).filter((c) => c.code === "test_missed").map((c) => c.params.id));
  const items = tv.to_answer.map((x) => ({ ...x, expired: missed.has(x.id), overdue: n > x.deadline }));
  const box = $("tests-to-answer");
  if (!items.length) reconcile(box, [0], () => "none", () => h("div", { class: "summary" }, t("tests.none")), () => "none");
  else reconcile(box, items, (x) => x.id, (x) => x.expired
    ? h("div", { class: "test-item expired", "data-id": x.id }, h("div", { class: "bad" }, t("tests.expired", { sent: utc(x.sent_at, true) })))
    : h("div", { class: `test-item${x.overdue ? " overdue" : ""}`, "data-id": x.id },
      h("div", { class: x.overdue ? "bad" : "wait" }, tx(x.overdue ? "tests.overdue" : "tests.incoming", { deadline: utc(x.deadline), left: countdown(x.deadline) })),
      can("operate") ? h("button", { class: "go answer-button", type: "button", "data-focus": "answer", onclick: (e) => answerTest(x.id, e.target) },
        t("act.answer", { user: S.me.user })) : null),
  (x) => `${x.expired}|${x.overdue}`);
  // "last proven 3 min ago" counts on with the ticker: a station that stops answering leaves an age that
  // grows, never one frozen at the last refresh.
  const last = tv.since_last_proven_ms;
  $("tests-summary").replaceChildren(...tx("tests.summary", { sent: tv.sent, passed: tv.passed, missed: tv.missed, pending: tv.pending,
    median: secs(tv.answer_ms_median), worst: secs(tv.answer_ms_worst),
    since: last === null ? t("tests.never") : h("span", {}, tx("tests.ago", { dur: since(now() - last) })) }));
  reconcile($("tests"), [...tv.tests].reverse().slice(0, 20), (x) => x.id, (x) => h("tr", {},
    h("td", {}, utc(x.sent_at, true)), h("td", {}, utc(x.receipted_at)), h("td", {}, x.answered_by || "-"), h("td", {}, secs(x.answer_ms)),
    h("td", { class: x.result === "passed" ? "good" : x.result === "missed" ? "bad" : "wait" }, t(`result.${x.result}`))),
  (x) => JSON.stringify([x.receipted_at, x.answered_by, x.result]));
}

// -- calls -------------------------------------------------------------------------------------------
function renderCalls(pairs, requests) {
  const reqs = [...requests].reverse();
  const list = $("call-requests");
  if (!reqs.length) reconcile(list, [0], () => "none", () => h("li", { class: "summary" }, t("calls.none")), () => "none");
  else reconcile(list, reqs, (r) => r.id, (r) => {
    const reply = r.reply;
    return h("li", { class: `request ${r.state}`, "data-id": r.id },
      h("div", {}, h("strong", { class: r.state === "open" ? "wait" : r.state === "accepted" ? "good" : "bad" }, t(`calls.state.${r.state}`)), " ",
        tx("calls.request_line", { who: t(r.ours ? "calls.ours" : "calls.theirs"), from: said(r.from_role, r.lang), to: said(r.to_role, r.lang) }),
        said(r.subject, r.lang)),
      h("div", { class: "summary" }, t("calls.expires", { at: utc(r.expires, true) }),
        r.windows.length ? ` · ${t("calls.windows", { windows: r.windows.map((w) => `${utc(w[0], true)} – ${utc(w[1])}`).join("; ") })}` : "",
        reply && reply.answer === "accept" ? ` · ${t("calls.reply_at", { time: utc(reply.time, true) })}` : "",
        reply && reply.reason ? [` · ${t("calls.reason")}`, said(reply.reason, reply.lang)] : ""),
      !r.ours && r.state === "open" && can("operate") ? h("form", { class: "reply-form form-grid", "data-url": "call-reply", "aria-label": t("calls.reply") },
        h("input", { type: "hidden", name: "request_id", value: r.id }),
        h("label", {}, h("span", {}, t("calls.time")), " ", h("input", { type: "datetime-local", name: "time" })),
        h("label", {}, h("span", {}, t("calls.decline_reason")), " ", h("input", { name: "reason" })),
        h("div", { class: "wide row" },
          h("button", { type: "submit", name: "answer", value: "accept", class: "go", "data-focus": "accept" }, t("calls.accept")),
          h("button", { type: "submit", name: "answer", value: "decline", class: "danger", "data-focus": "decline" }, t("calls.decline")),
          h("span", { class: "result", role: "status" }))) : null);
  }, (r) => JSON.stringify([r.state, r.reply]));
  const sel = $("call-record-request");
  // a request's roles and subject as its side wrote them, marked with that side's language
  const options = [["", t("calls.no_request"), null], ...requests.filter((r) => r.state !== "declined").map((r) => [r.id, `${r.from_role} → ${r.to_role}: ${r.subject}`, r.lang])];
  const sig = JSON.stringify(options);
  if (sel.dataset.sig !== sig) {
    const keep = sel.value;
    sel.replaceChildren(...options.map(([v, label, lang]) => h("option", { value: v, lang, dir: lang ? "auto" : null }, label)));
    sel.value = keep; sel.dataset.sig = sig;
  }
  const calls = pairs.flatMap((p) => p.calls.map((c) => ({ ...c, pair: p })));
  const box = $("calls");
  if (!calls.length) { reconcile(box, [0], () => "none", () => h("div", { class: "summary" }, t("calls.norecords")), () => "none"); return; }
  reconcile(box, calls.reverse(), (c) => c.id, (c) => {
    const ro = (side, label) => {
      const r = c.readouts[side];
      return h("div", { class: `readout ${side}` }, h("strong", {}, t(label)),
        r ? said(r.text, r.lang, "div") : h("div", { class: "dim" }, t("calls.not_filed")),
        r ? h("div", { class: "by" }, t("calls.by", { by: r.by }), " (", r.lang, ")") : null);
    };
    return h("div", { class: "call", "data-id": c.id },
      h("h4", {}, said(c.pair.principals.join(" ↔ "), null), " — ", t("calls.call", { start: utc(c.start, true), end: utc(c.end) }),
        " ", h("span", { class: "call-id dim" }, t("calls.call_id", { id: short(c.id) }))),
      h("div", { class: "summary" }, t("calls.summary", c.pair), c.pair.days_since_last_call !== null ? ` · ${t("calls.days", { days: c.pair.days_since_last_call })}` : ""),
      h("div", { class: "readouts" }, ro("ours", "calls.our_readout"), ro("theirs", "calls.their_readout")),
      !c.readouts.ours && can("operate") ? h("form", { class: "readout-form", "data-url": "readout" },
        h("input", { type: "hidden", name: "call_id", value: c.id }),
        h("label", { class: "stack" }, h("span", {}, t("calls.readout_text")), h("textarea", { name: "text", rows: 3, required: true })),
        h("div", { class: "row" }, h("button", { type: "submit", "data-focus": "readout" }, t("calls.submit_readout", { user: S.me.user })),
          h("span", { class: "result", role: "status" }))) : null);
  }, (c) => JSON.stringify([c.readouts, c.pair.accepted, c.pair.declined, c.pair.open, c.pair.days_since_last_call]));
}

// -- notices: table, map and conflicts ----------------------------------------------------------------
function renderNotices(v) {
  const conflicted = new Set(v.conflicts.flatMap((c) => c.ids));
  reconcile($("notice-conflicts"), v.conflicts, (c) => c.ids.join(":"), (c) => h("div", { class: "conflict-line" },
    t("notices.conflict_line", { a: short(c.ids[0]), b: short(c.ids[1]), d: c.distance_m, m: c.margin_m, from: utc(c.time_overlap[0], true),
      to: utc(c.time_overlap[1]), floor: c.band_overlap[0], ceiling: c.band_overlap[1] })), (c) => JSON.stringify(c));
  const body = $("notices");
  if (!v.active.length) reconcile(body, [0], () => "none", () => h("tr", {}, h("td", { colspan: 8, class: "summary" }, t("notices.none"))), () => "none");
  else reconcile(body, v.active, (n) => n.id || n.ref, (n) => h("tr", { class: conflicted.has(n.id) ? "conflicted" : "", "data-id": n.id },
    h("td", {}, short(n.id)), h("td", {}, t(n.ours ? "notices.ours" : "notices.theirs")), h("td", {}, t(`kinds.${n.kind}`)),
    h("td", {}, `${utc(n.start, true)} – ${utc(n.end, true)}`), h("td", {}, `${n.floor_m}–${n.ceiling_m}`), h("td", {}, `${n.margin_m} ${t("unit.m")}`),
    h("td", {}, said(n.text, S.langOf.get(n.id))),
    h("td", {}, n.ours && can("operate") ? [
      h("button", { type: "button", class: "small amend", "data-focus": "amend", "aria-label": `${t("notices.amend")} ${short(n.id)}`,
        onclick: () => startAmend(n) }, t("notices.amend")),
      h("form", { class: "withdraw-form", "data-url": "withdraw", "data-arm": "1" },
        h("input", { type: "hidden", name: "notice_id", value: n.id }),
        h("button", { type: "submit", class: "small", "data-focus": "withdraw", "aria-label": `${t("notices.withdraw")} ${short(n.id)}` }, t("notices.withdraw")),
        h("span", { class: "result", role: "status" }))] : null,
    n.amends ? h("div", { class: "summary" }, t("notices.amends", { seq: n.amends.split(":")[1] })) : null)),
  (n) => JSON.stringify([conflicted.has(n.id), n.conflicts]));
  drawNotices(v, conflicted);
}

function initMap() {
  if (S.map || !window.L) return;
  const map = L.map("map", { worldCopyJump: true, minZoom: 2, maxZoom: 12, zoomSnap: 0.5, attributionControl: true });
  map.attributionControl.setPrefix(false);
  for (const [cls, key] of [["in", "map.zoom_in"], ["out", "map.zoom_out"]]) { // Leaflet's own English, ours to say
    const a = map.getContainer().querySelector(`.leaflet-control-zoom-${cls}`);
    if (a) { a.dataset.i18nLabel = key; a.dataset.i18nTitle = key; a.title = t(key); a.setAttribute("aria-label", t(key)); }
  }
  map.attributionControl.addAttribution("Natural Earth");
  map.setView([48, 30], 4);
  S.map = map;
  S.noticeLayer = L.layerGroup().addTo(map);
  S.drawLayer = L.layerGroup().addTo(map);
  const labels = () => map.getContainer().classList.toggle("labels-off", map.getZoom() < 4);
  map.on("zoomend", labels); labels();
  map.on("moveend resize", declutterLabels); // the labels have moved by then (Leaflet moves them on zoom/viewreset)
  map.on("click", (e) => { if (S.draw) addDrawPoint(e.latlng); });
  fetch("vendor/natural-earth/ne_110m.json").then((r) => r.json()).then((world) => {
    S.world = world;
    const countries = world.features.filter((f) => f.properties.name);
    // The world is drawn on one canvas in a pane of its own, under the notices (which stay SVG, each
    // its own element): as SVG, every coastline, border and country cost 2.5-3 s of layout at each
    // zoom on a busy 2-core box; on a canvas about 30 ms.
    map.createPane("world").style.zIndex = "350";
    const paper = L.canvas({ padding: 0.2, pane: "world" });
    L.geoJSON({ type: "FeatureCollection", features: countries }, { renderer: paper, interactive: false, style: { stroke: false, fillColor: "#1d2733", fillOpacity: 1 } }).addTo(map);
    for (const f of world.features.filter((f) => f.properties.layer)) {
      const coast = f.properties.layer === "coastline";
      L.geoJSON(f, { renderer: paper, interactive: false, style: { color: coast ? "#8fb3c9" : "#7d8a99", weight: coast ? 1.2 : 1, dashArray: coast ? null : "4 3", fill: false } }).addTo(map);
    }
    S.countryLayer = L.layerGroup().addTo(map);
    labelCountries();
    S.noticeLayer.remove(); S.noticeLayer.addTo(map); S.drawLayer.remove(); S.drawLayer.addTo(map);
  }).catch(() => {});
}
function labelCountries() {
  if (!S.countryLayer || !S.world) return;
  S.countryLayer.clearLayers();
  S.countryLabels = [];
  for (const f of S.world.features.filter((x) => x.properties.name)) {
    const name = f.properties.name;
    const ru = S.lang === "ru" && window.REDLINE_COUNTRIES_RU[name];
    const bounds = L.geoJSON(f).getBounds();
    const label = h("span", { lang: ru ? "ru" : "en" }, ru || name);
    // A marker, not a permanent tooltip: at a zoom a marker is only moved, a tooltip measures itself
    // (a layout per name). The name is centred by CSS.
    const tip = L.marker(bounds.getCenter(), { icon: L.divIcon({ className: "country-label", html: label, iconSize: null }),
      interactive: false, keyboard: false }).addTo(S.countryLayer);
    const size = (bounds.getNorth() - bounds.getSouth()) * (bounds.getEast() - bounds.getWest());
    S.countryLabels.push({ tip, size });
  }
  S.countryLabels.sort((a, b) => b.size - a.size); // the larger country keeps its name where two meet
  declutterLabels();
}
// Labels never collide: at every zoom and pan, each label (larger countries first) is shown only if
// it overlaps none already shown.
function declutterLabels() {
  if (!S.countryLabels || !S.map) return;
  // Every box is read first, then every visibility written: one layout, not one per label
  // (visibility does not change a box).
  const view = S.map.getContainer().getBoundingClientRect();
  const boxes = S.countryLabels.map(({ tip }) => {
    const el = tip.getElement(); // the marker; its name is drawn (and measured) by the span inside
    return [el, el && el.firstChild ? el.firstChild.getBoundingClientRect() : null];
  });
  const shown = [], pad = 4;
  for (const [el, r] of boxes) {
    if (!el || !r) continue;
    const onMap = r.width && r.right > view.left && r.left < view.right && r.bottom > view.top && r.top < view.bottom;
    const hit = onMap && shown.some((o) => r.left < o.right + pad && r.right + pad > o.left && r.top < o.bottom + pad && r.bottom + pad > o.top);
    if (onMap && !hit) shown.push(r);
    const want = hit ? "hidden" : "";
    if (el.style.visibility !== want) el.style.visibility = want;
  }
}
const ll = (c) => [Number(c[1]), Number(c[0])];
function areaLayers(area, radius, style) {
  if (area.type === "Point") return [L.circle(ll(area.coordinates), { ...style, radius: Number(radius) || 1000 })];
  const polys = area.type === "Polygon" ? [area.coordinates] : area.type === "MultiPolygon" ? area.coordinates : [];
  return polys.map((p) => L.polygon(p.map((ring) => ring.map(ll)), style));
}
function drawNotices(v, conflicted) {
  if (!S.map) return;
  const sig = `${S.lang}|${JSON.stringify([v.active.map((n) => [n.id, n.area, n.radius_m]), v.conflicts.map((c) => c.ids)])}`;
  if (sig === S.noticeSig) return;
  S.noticeSig = sig;
  S.noticeLayer.clearLayers();
  const bounds = [];
  for (const n of v.active) {
    const bad = conflicted.has(n.id);
    const color = bad ? "#ff3b3b" : n.ours ? "#35c8ff" : "#ff9d2e";
    const style = { color, weight: bad ? 4 : 2, fillColor: n.ours ? "#35c8ff" : "#ff9d2e", fillOpacity: 0.22, className: `area ${n.ours ? "ours" : "theirs"}${bad ? " conflict" : ""}` };
    for (const layer of areaLayers(n.area, n.radius_m, style)) {
      layer.bindTooltip(h("span", {}, `${t(n.ours ? "notices.ours" : "notices.theirs")} · ${t(`kinds.${n.kind}`)} · ${n.floor_m}–${n.ceiling_m} ${t("unit.m")} · `,
        said(n.text, S.langOf.get(n.id))));
      layer.addTo(S.noticeLayer);
      bounds.push(layer.getBounds());
    }
  }
  for (const c of v.conflicts) {
    if (!c.where) continue;
    for (const layer of areaLayers(c.where, 3000, { color: "#ff3b3b", weight: 1, fillColor: "#ff3b3b", fillOpacity: 0.6, className: "where" })) layer.addTo(S.noticeLayer);
  }
  S.noticeBounds = bounds;
  const ids = v.active.map((n) => n.id).join(",");
  // New notices: show them (but never move the map under a person drawing); a refresh keeps the person's view.
  if (ids !== S.noticeIds) { S.noticeIds = ids; if (!S.draw) fitNotices(); }
}
function fitNotices() {
  if (!S.map || !S.noticeBounds || !S.noticeBounds.length) return;
  const b = S.noticeBounds.reduce((acc, x) => acc.extend(x), L.latLngBounds(S.noticeBounds[0].getSouthWest(), S.noticeBounds[0].getNorthEast()));
  S.map.fitBounds(b.pad(0.3), { maxZoom: 9 });
}

// -- notice form: an area drawn on the map or typed ----------------------------------------------------
// A polygon takes a click per corner (FINISH AREA closes it); a rectangle two opposite corners; a
// circle its centre, then a point on its edge (the radius, in whole metres, goes to the form).
function chooseShape(button) {
  S.shape = button.dataset.shape;
  for (const b of $("draw-shape").querySelectorAll("[data-shape]")) b.setAttribute("aria-pressed", String(b === button));
  if (S.draw) startDraw();
}
function drawHint() {
  const n = S.draw ? S.draw.points.length : 0;
  return S.shape === "polygon" ? t("notices.f.drawing", { n }) : t(`notices.f.drawing_${S.shape}_${Math.min(n, 1)}`);
}
function startDraw() {
  S.draw = { points: [], shape: S.shape };
  $("draw-finish").hidden = S.shape !== "polygon";
  $("map").classList.add("drawing");
  $("draw-status").textContent = drawHint();
  $("map").scrollIntoView({ block: "center" });
}
const deg = (x) => x.toFixed(4);
function addDrawPoint(latlng) {
  const d = S.draw;
  d.points.push(latlng);
  if (d.shape === "polygon") {
    $("notice-area").value = d.points.map((p) => `${deg(p.lat)}, ${deg(p.lng)}`).join("\n");
  } else if (d.shape === "rectangle") {
    const [a, b] = [d.points[0], d.points[d.points.length - 1]];
    $("notice-area").value = d.points.length < 2 ? `${deg(a.lat)}, ${deg(a.lng)}`
      : [[a.lat, a.lng], [a.lat, b.lng], [b.lat, b.lng], [b.lat, a.lng]].map(([y, x]) => `${deg(y)}, ${deg(x)}`).join("\n");
  } else {
    const c = d.points[0];
    $("notice-area").value = `${deg(c.lat)}, ${deg(c.lng)}`;
    if (d.points.length > 1) $("notice-radius").value = String(Math.max(1, Math.round(S.map.distance(c, latlng))));
  }
  if (d.shape !== "polygon" && d.points.length >= 2) { finishDraw(); return; }
  $("draw-status").textContent = drawHint();
  previewArea();
}
function finishDraw() {
  S.draw = null;
  $("draw-finish").hidden = true;
  $("map").classList.remove("drawing");
  $("draw-status").textContent = "";
  previewArea();
}
function clearArea() {
  $("notice-area").value = "";
  $("notice-radius").value = "";
  if (S.draw) S.draw.points = [];
  previewArea();
}
function previewArea() {
  if (!S.drawLayer) return;
  S.drawLayer.clearLayers();
  try {
    const area = parseArea($("notice-area").value, $("notice-radius").value, true);
    if (area) for (const l of areaLayers(JSON.parse(area), $("notice-radius").value || 1000, { color: "#ffffff", weight: 2, dashArray: "6 4", fillOpacity: 0.1 })) l.addTo(S.drawLayer);
  } catch (e) { /* shown when filed */ }
}
// AMEND on one of our notices: the form takes its values; what is filed names it in "amends", and
// both stations put the new notice in its place and check it against the board again.
function noticeAreaText(area) {
  if (area.type === "Point") return `${area.coordinates[1]}, ${area.coordinates[0]}`;
  if (area.type === "Polygon" && area.coordinates.length === 1) {
    return area.coordinates[0].slice(0, -1).map((c) => `${c[1]}, ${c[0]}`).join("\n");
  }
  return JSON.stringify(area);
}
const isoMinute = (ms) => new Date(Number(ms)).toISOString().slice(0, 16);
async function startAmend(n) {
  if (n.area_outline) { // the list carries an outline of a large area: amend the whole one
    try { n = (await api("GET", `${lineUrl("notices")}?notice=${encodeURIComponent(n.id)}`)).notice; } catch (e) { return; }
  }
  const f = $("notice-form");
  $("notice-details").open = true;
  f.elements.kind.value = n.kind;
  f.elements.area.value = noticeAreaText(n.area);
  f.elements.radius_m.value = n.area.type === "Point" && n.radius_m ? String(n.radius_m) : "";
  f.elements.floor_m.value = String(n.floor_m); f.elements.ceiling_m.value = String(n.ceiling_m);
  f.elements.margin_m.value = String(n.margin_m || 0);
  f.elements.start.value = isoMinute(n.start); f.elements.end.value = isoMinute(n.end);
  f.elements.text.value = n.text || "";
  f.elements.amends.value = n.id;
  f._key = null; // a new submit: the amendment is not a retry of anything typed before
  showAmending();
  previewArea();
  $("notice-area").focus();
}
function showAmending() {
  const id = $("notice-amends").value;
  $("notice-amending").hidden = !id;
  $("notice-amending-text").textContent = id ? t("notices.amending", { id: short(id) }) : "";
  $("notice-submit").textContent = t(id ? "notices.f.submit_amend" : "notices.f.submit");
}
function cancelAmend() {
  $("notice-amends").value = "";
  showAmending();
}

class Invalid extends Error {
  constructor(message, field) { super(message); this.field = field; }
}
const NUM = /^-?\d{1,3}(\.\d+)?$/;
// The area as GeoJSON text with every coordinate exactly as typed (the station keeps decimals as
// written): pasted GeoJSON is passed on as is; "lat, lon" lines become a Polygon (or a Point).
function parseArea(text, radius, lenient) {
  const raw = text.trim();
  if (!raw) { if (lenient) return null; throw new Invalid(t("v.area_empty"), "notice-area"); }
  if (raw.startsWith("{")) {
    let obj;
    try { obj = JSON.parse(raw); } catch (e) { throw new Invalid(t("v.area_json", { error: e.message }), "notice-area"); }
    if (!obj || !["Polygon", "MultiPolygon", "Point"].includes(obj.type)) throw new Invalid(t("v.area_json", { error: "type" }), "notice-area");
    if (obj.type === "Point" && !radius && !lenient) throw new Invalid(t("v.radius"), "notice-radius");
    return raw;
  }
  const pts = [];
  raw.split(/\n|;/).map((l) => l.trim()).filter(Boolean).forEach((line, i) => {
    const parts = line.split(/[\s,]+/).filter(Boolean);
    if (parts.length !== 2 || !NUM.test(parts[0]) || !NUM.test(parts[1])) throw new Invalid(t("v.area_line", { n: i + 1, text: line }), "notice-area");
    const [lat, lon] = parts;
    if (Math.abs(Number(lat)) > 90 || Math.abs(Number(lon)) > 180) throw new Invalid(t("v.area_range", { n: i + 1 }), "notice-area");
    pts.push([lon, lat]);
  });
  if (pts.length === 1) {
    if (!radius && !lenient) throw new Invalid(t("v.radius"), "notice-radius");
    return `{"type":"Point","coordinates":[${pts[0][0]},${pts[0][1]}]}`;
  }
  if (pts.length < 3) { if (lenient) return null; throw new Invalid(t("v.area_points"), "notice-area"); }
  const first = pts[0], last = pts[pts.length - 1];
  if (Number(first[0]) !== Number(last[0]) || Number(first[1]) !== Number(last[1])) pts.push(first);
  return `{"type":"Polygon","coordinates":[[${pts.map(([x, y]) => `[${x},${y}]`).join(",")}]]}`;
}
const utcInput = (v) => (v ? `${v.length === 16 ? v : v.slice(0, 16)}Z` : "");
function intField(form, name, label, required) {
  const el = form.elements[name];
  const v = el.value.trim();
  if (!v) { if (required) throw new Invalid(t("v.required", { field: label }), el.id); return undefined; }
  if (!/^-?\d+$/.test(v)) throw new Invalid(t("v.number", { field: label }), el.id);
  return Number(v);
}
function required(form, name, label) {
  const el = form.elements[name];
  if (!el.value.trim()) throw new Invalid(t("v.required", { field: label }), el.id || null);
  return el.value.trim();
}
function noticeBody(form) {
  const radius = intField(form, "radius_m", t("notices.f.radius"), false);
  const body = { kind: form.elements.kind.value, area: parseArea(form.elements.area.value, radius, false) };
  if (radius !== undefined && body.area.includes('"Point"')) body.radius_m = radius;
  body.floor_m = intField(form, "floor_m", t("notices.f.floor"), true);
  body.ceiling_m = intField(form, "ceiling_m", t("notices.f.ceiling"), true);
  if (body.ceiling_m <= body.floor_m) throw new Invalid(t("v.band"), "notice-ceiling");
  body.start = utcInput(required(form, "start", t("notices.f.start")));
  body.end = utcInput(required(form, "end", t("notices.f.end")));
  if (Date.parse(body.end) <= Date.parse(body.start)) throw new Invalid(t("v.window"), "notice-end");
  body.margin_m = intField(form, "margin_m", t("notices.f.margin"), false) || 0;
  body.text = form.elements.text.value;
  if (form.elements.amends.value) body.amends = form.elements.amends.value;
  return body;
}

// -- the transcript's search and the export ---------------------------------------------------------
// Envelope kinds in the order a person meets them; each has a name in both languages (kindname.*).
const KINDS = ["TEXT", "FLASH", "ACK", "READ", "ESCALATED", "TEST", "TEST_ANSWER", "TEST_RESULT", "NOTICE", "NOTICE_WITHDRAW",
  "CALL_REQUEST", "CALL_REPLY", "CALL_EXPIRED", "CALL_RECORD", "READOUT", "TRANSLATION", "CALL_RING", "CALL_ANSWER",
  "CALL_DECLINE", "CALL_UNANSWERED", "CALL_HANGUP", "CALL_AUDIO", "ROSTER", "KEY", "REVOKE", "ROOT", "ROOT_CONFIRM"];
const kindName = (kind) => (KINDS.includes(kind) ? t(`kindname.${kind}`) : kind);
function fillKinds() {
  const sel = $("log-kind");
  const keep = sel.value;
  sel.replaceChildren(h("option", { value: "" }, t("log.kind_all")), ...KINDS.map((k) => h("option", { value: k }, kindName(k))));
  sel.value = keep;
}
function setExportLink() {
  const a = $("export-link");
  if (!S.line) return;
  a.href = lineUrl("export");
  a.setAttribute("download", `redline-${S.line.slice(0, 8)}-${S.me ? S.me.station : "station"}.bundle.json`);
}
function runSearch(ev) {
  if (ev) ev.preventDefault();
  const q = $("log-q").value.trim(), kind = $("log-kind").value;
  S.search = q || kind ? { q, kind } : null;
  if (!S.search) $("log-found").textContent = "";
  refreshViews();
}
function clearSearch() {
  $("log-q").value = ""; $("log-kind").value = "";
  runSearch();
  $("log-q").focus();
}
async function fetchLog() {
  if (!S.search) return api("GET", `${lineUrl("log")}?limit=200`);
  const qs = new URLSearchParams({ limit: "200" });
  if (S.search.q) qs.set("q", S.search.q);
  if (S.search.kind) qs.set("kind", S.search.kind);
  return api("GET", `${lineUrl("search")}?${qs}`);
}
function renderFound(log) {
  const el = $("log-found");
  if (!S.search || log.matched === undefined) { setText(el, ""); return; }
  const shown = log.rows.length + log.outbox.length;
  const key = log.complete ? (shown < log.matched ? "log.found_newest" : "log.found") : shown < log.matched ? "log.found_newest_window" : "log.found_window";
  setText(el, t(key, { n: log.matched, shown, scanned: log.scanned, total: log.total }));
}

// -- every form: one idempotency key per submit, buttons disabled in flight -----------------------
const BODIES = {
  send: (f) => {
    const text = f.elements.text.value;
    if (!text.trim()) throw new Invalid(t("result.empty"), "compose-text");
    return { text, priority: f.querySelector("[data-prio][aria-pressed=true]").dataset.prio };
  },
  test: () => ({}),
  translate: (f) => ({ ref_id: f.elements.ref_id.value, text: required(f, "text", t("tr.text")), lang: f.elements.lang.value,
    translator: f.elements.translator.value.trim() || undefined }),
  "call-request": (f) => {
    const body = { from_role: required(f, "from_role", t("calls.from_role")), to_role: required(f, "to_role", t("calls.to_role")),
      subject: required(f, "subject", t("calls.subject")), windows: [] };
    const ws = f.elements.window_start.value, we = f.elements.window_end.value;
    if (ws && we) {
      if (Date.parse(utcInput(we)) <= Date.parse(utcInput(ws))) throw new Invalid(t("v.window"), null);
      body.windows.push([utcInput(ws), utcInput(we)]);
    }
    if (f.elements.expires.value) body.expires = utcInput(f.elements.expires.value);
    return body;
  },
  "call-reply": (f, submitter) => {
    const answer = submitter ? submitter.value : "decline";
    const body = { request_id: f.elements.request_id.value, answer };
    if (answer === "accept") body.time = utcInput(required(f, "time", t("calls.time")));
    else if (f.elements.reason.value.trim()) body.reason = f.elements.reason.value.trim();
    return body;
  },
  "call-record": (f) => {
    const body = { start: utcInput(required(f, "start", t("calls.start"))), end: utcInput(required(f, "end", t("calls.end"))),
      principals: required(f, "principals", t("calls.principals")), participants: required(f, "participants", t("calls.participants")) };
    if (Date.parse(body.end) < Date.parse(body.start)) throw new Invalid(t("v.window"), null);
    if (f.elements.request_id.value) body.request_id = f.elements.request_id.value;
    if (f.elements.note.value.trim()) body.note = f.elements.note.value.trim();
    return body;
  },
  readout: (f) => ({ call_id: f.elements.call_id.value, text: required(f, "text", t("calls.readout_text")) }),
  notice: noticeBody,
  withdraw: (f) => ({ notice_id: f.elements.notice_id.value }),
};
const AFTER = {
  // The console's own words for the two outcomes, not the station's English "state".
  send: (f, r) => { f.elements.text.value = ""; return r.seq ? t("result.accepted", { seq: r.seq }) : t("result.accepted_outbox"); },
  notice: (f, r) => { const amended = f.elements.amends.value; f.reset(); clearArea(); cancelAmend();
    return amended ? t("result.amended", { id: short(amended) }) : t("result.filed"); },
  translate: (f) => { f.elements.text.value = ""; f.hidden = true; $("translate-pick").hidden = false; return t("result.filed"); },
  "call-request": (f) => { f.reset(); return t("result.filed"); },
  "call-record": (f) => { f.reset(); return t("result.filed"); },
};
async function submitForm(ev) {
  const form = ev.target;
  const url = form.dataset.url;
  if (!url || !BODIES[url]) return;
  ev.preventDefault();
  if (form.dataset.busy) return; // a second click while the first is in flight
  const out = form.querySelector(".result");
  // Before the station's first status the page knows no line: say so in the reader's words rather
  // than post to /api/lines/null/ and show the station's "no line matches 'null'".
  if (!S.line) { if (out) { out.textContent = t("result.no_line"); out.className = "result bad"; } return; }
  // A destructive one-click action (WITHDRAW) asks for a second, deliberate press; a double click
  // is not one.
  if (form.dataset.arm) {
    const armed = Number(form.dataset.armed || 0);
    if (!armed || Date.now() - armed > 8000 || Date.now() - armed < 400) {
      if (!armed || Date.now() - armed > 8000) {
        form.dataset.armed = String(Date.now());
        if (out) { out.textContent = t("notices.confirm_withdraw", { id: short(form.elements.notice_id.value) }); out.className = "result wait"; }
      }
      return;
    }
  }
  let body;
  try { body = BODIES[url](form, ev.submitter); }
  catch (e) {
    if (!(e instanceof Invalid)) throw e;
    if (out) { out.textContent = e.message; out.className = "result bad"; }
    if (e.field && $(e.field)) $(e.field).focus();
    return;
  }
  form._key = form._key || uuid(); // kept across a retry until the station answered for it
  body.idempotency_key = form._key;
  const buttons = [...form.querySelectorAll("button[type=submit], button:not([type])")];
  form.dataset.busy = "1";
  form.setAttribute("aria-busy", "true");
  for (const b of buttons) b.disabled = true;
  if (out) { out.textContent = t("result.sending"); out.className = "result wait"; }
  try {
    const r = await api("POST", lineUrl(url), body);
    form._key = null;
    delete form.dataset.armed;
    const said_ = AFTER[url] ? AFTER[url](form, r) : t("result.filed");
    if (out) { out.textContent = said_; out.className = "result good"; }
    refreshViews(); refreshWatch();
  } catch (e) {
    if (out) showRefused(out, e);
    // Refused for what it said: a new submit is a new request. Lost on the way (no answer, 5xx):
    // the retry keeps the key, so the station files it at most once.
    if (e.status >= 400 && e.status < 500) form._key = null;
  } finally {
    delete form.dataset.busy;
    form.removeAttribute("aria-busy");
    for (const b of buttons) b.disabled = false;
  }
}
async function confirmCode(ev) {
  ev.preventDefault();
  const out = ev.target.querySelector(".result");
  try { await api("POST", lineUrl("confirm"), { code: $("confirm-code").value }); out.textContent = t("result.filed"); out.className = "result good"; }
  catch (e) { showRefused(out, e); }
}
function choosePriority(button) {
  for (const b of $("compose-priority").querySelectorAll("[data-prio]")) b.setAttribute("aria-pressed", String(b === button));
  $("compose-form").classList.toggle("is-flash", button.dataset.prio === "flash");
}

// -- voice -------------------------------------------------------------------------------------------
// The microphone is encoded here (WebCodecs AudioEncoder, Opus, 20 ms packets) and each packet goes
// to the station as one binary WebSocket message: u8 1 | call id (32 bytes) | u32 packet number |
// u32 timestamp ms | Opus. The station hashes and forwards exactly these bytes, so the evidence
// covers what this browser encoded. The peer's packets come back in the same shape and are decoded
// (AudioDecoder) and played in order with a short playout buffer. Nothing is sent until the call
// is live; the station would refuse it anyway.
const V = {
  call: null, live: false, muted: false, stream: null, reader: null, encoder: null, decoder: null,
  number: 0, playAt: 0, depths: [], view: null,
};
window.redlineVoice = { sent: 0, heard: 0, played: 0, skipped: 0, refused: [], error: null };
const hexToBytes = (hex) => Uint8Array.from(hex.match(/../g), (b) => parseInt(b, 16));
const bytesToHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
function voiceSend(obj) { if (S.ws && S.ws.readyState === 1) S.ws.send(JSON.stringify(obj)); }
function voiceError(key) {
  window.redlineVoice.error = key;
  $("voice-error").textContent = key ? t(key) : "";
  if (key) $("voice-error").dataset.i18n = key; else delete $("voice-error").dataset.i18n;
}
function voiceNote(msg) {
  if (msg.type === "audio_refused") {
    window.redlineVoice.refused.push(msg.reason);
    $("voice-result").replaceChildren(...tx("voice.refused", { reason: said(msg.reason, "en") }));
    $("voice-result").className = "result bad";
  }
}
async function joinCall(id) {
  if (V.call === id) return;
  stopMedia();
  V.call = id; V.number = 0; V.playAt = 0; V.depths = []; V.muted = false;
  voiceSend({ type: "join", call: id });
  voiceError(null);
  if (!can("operate")) return;
  if (!("AudioEncoder" in window) || !("MediaStreamTrackProcessor" in window) || !("AudioDecoder" in window)) {
    voiceError("voice.no_webcodecs"); return;
  }
  let stream;
  try { stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } }); }
  catch (e) { voiceError("voice.no_mic"); return; }
  if (V.call !== id) { for (const tr of stream.getTracks()) tr.stop(); return; }
  V.stream = stream;
  const track = stream.getAudioTracks()[0];
  V.encoder = new AudioEncoder({ output: sendChunk, error: () => voiceError("voice.no_webcodecs") });
  V.reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
  pumpMic(V.reader, V.encoder);
}
async function pumpMic(reader, encoder) {
  for (;;) {
    let r;
    try { r = await reader.read(); } catch (e) { return; }
    if (r.done || !r.value) return;
    const frame = r.value;
    try {
      if (encoder.state === "unconfigured") {
        encoder.configure({ codec: "opus", sampleRate: frame.sampleRate, numberOfChannels: frame.numberOfChannels, bitrate: 24000 });
      }
      if (encoder.state === "configured" && V.live && !V.muted && V.encoder === encoder) encoder.encode(frame);
    } catch (e) { /* closed meanwhile */ }
    frame.close();
    if (V.encoder !== encoder) return;
  }
}
function sendChunk(chunk) {
  if (!V.call || !V.live || V.muted || !S.ws || S.ws.readyState !== 1) return;
  if (S.ws.bufferedAmount > 32 * 1024) return; // a stalled socket: drop audio rather than queue it
  const buf = new Uint8Array(41 + chunk.byteLength);
  const dv = new DataView(buf.buffer);
  buf[0] = 1; buf.set(hexToBytes(V.call), 1);
  dv.setUint32(33, V.number++ >>> 0); dv.setUint32(37, Math.floor(chunk.timestamp / 1000) >>> 0);
  chunk.copyTo(buf.subarray(41));
  S.ws.send(buf);
  window.redlineVoice.sent += 1;
}
function voiceIn(data) {
  if (!(data instanceof ArrayBuffer) || data.byteLength < 42) return;
  const dv = new DataView(data);
  if (dv.getUint8(0) !== 1 || bytesToHex(new Uint8Array(data, 1, 32)) !== V.call) return;
  window.redlineVoice.heard += 1;
  if (!("AudioDecoder" in window)) return;
  if (!V.decoder) {
    V.decoder = new AudioDecoder({ output: playFrame, error: () => { V.decoder = null; } });
    V.decoder.configure({ codec: "opus", sampleRate: 48000, numberOfChannels: 1 });
  }
  V.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: dv.getUint32(37) * 1000, data: new Uint8Array(data, 41) }));
}
function playFrame(frame) {
  const ctx = ensureAudio();
  try {
    if (!ctx) return;
    const pcm = new Float32Array(frame.numberOfFrames);
    frame.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
    const buffer = ctx.createBuffer(1, frame.numberOfFrames, frame.sampleRate);
    buffer.copyToChannel(pcm, 0);
    // 60 ms of playout buffer; if playout fell far behind (a stall), start again from now.
    if (V.playAt < ctx.currentTime || V.playAt - ctx.currentTime > 0.5) V.playAt = ctx.currentTime + 0.06;
    // A late frame re-anchors the buffer later and nothing brought it back: its depth was set by the
    // worst jitter so far (bench.voice_browsers: 69-118 ms mouth to ear against WebRTC's 40-59). When
    // it stayed over 80 ms for a whole second, leave one 20 ms frame out to come back towards 60.
    V.depths.push(V.playAt - ctx.currentTime);
    if (V.depths.length > 50) V.depths.shift();
    if (V.depths.length === 50 && Math.min(...V.depths) > 0.08) {
      V.depths = []; window.redlineVoice.skipped += 1; return;
    }
    const src = ctx.createBufferSource();
    src.buffer = buffer; src.connect(ctx.destination);
    src.start(V.playAt);
    V.playAt += buffer.duration;
    window.redlineVoice.played += 1;
  } finally { frame.close(); }
}
function stopMedia() {
  if (V.call) voiceSend({ type: "leave" });
  if (V.reader) { V.reader.cancel().catch(() => {}); V.reader = null; }
  if (V.stream) { for (const tr of V.stream.getTracks()) tr.stop(); V.stream = null; }
  for (const c of [V.encoder, V.decoder]) { try { if (c && c.state !== "closed") c.close(); } catch (e) { /* closed */ } }
  V.encoder = null; V.decoder = null; V.call = null; V.live = false;
}
function toggleMute() {
  V.muted = !V.muted;
  const b = $("voice-mute");
  b.setAttribute("aria-pressed", String(V.muted));
  b.dataset.i18n = V.muted ? "voice.unmute" : "voice.mute";
  b.textContent = t(b.dataset.i18n);
  renderVoice();
}
async function voiceAction(route, body, button) {
  if (button) button.disabled = true;
  try { const r = await api("POST", lineUrl(route), body); setText($("voice-result"), ""); return r; }
  catch (e) { showFailure(button, e); showRefused($("voice-result"), e); return null; }
  finally { if (button) button.disabled = false; refreshWatch(); }
}
async function ringPeer(button) {
  unlockAudio();
  const r = await voiceAction("ring", { idempotency_key: uuid() }, button);
  if (r && r.id) joinCall(r.id);
}
// A line test made as a voice test: the TEST, then a ring naming it; the peer answers it by picking up,
// and that pick-up (signed by whoever picked up) is the test's answer.
async function voiceTest(button) {
  unlockAudio();
  const test = await voiceAction("test", { idempotency_key: uuid() }, button);
  if (!test || !test.id) return;
  const r = await voiceAction("ring", { test_id: test.id, idempotency_key: uuid() }, button);
  if (r && r.id) joinCall(r.id);
}
async function pickUp(id, button) {
  unlockAudio();
  const r = await voiceAction("pick-up", { ring_id: id }, button);
  if (r) { S.silenced.add(`voice_ring:${id}`); joinCall(id); }
}
async function declineCall(id, button) { await voiceAction("decline", { ring_id: id }, button); }
async function hangUp(button) { if (V.view && V.view.current) await voiceAction("hang-up", { ring_id: V.view.current.id }, button); }
let voiceBusy = false;
async function refreshVoice() {
  if (!S.line || !S.me || voiceBusy) return;
  voiceBusy = true;
  try { V.view = await api("GET", lineUrl("voice")); renderVoice(); }
  catch (e) { /* the next tick tries again */ }
  finally { voiceBusy = false; }
}
function renderVoice() {
  const v = V.view;
  if (!v) return;
  const peer = S.watch ? S.watch.peer : "";
  const cur = v.current;
  // The call this console is on ended, was declined or timed out (a view older than our own ring or
  // pick-up does not list it yet: that is no reason to stop).
  const onIt = V.call ? v.calls.find((c) => c.id === V.call) : null;
  if (onIt && onIt.state !== "ringing" && onIt.state !== "live") stopMedia();
  V.live = !!cur && cur.state === "live" && V.call === cur.id;
  const word = !cur ? "voice.idle" : cur.state === "live" ? "voice.live" : cur.ours ? "voice.ringing_out" : "voice.ringing_in";
  setText($("voice-state"), t(word, { peer }), `state-word small ${!cur ? "dim" : cur.state === "live" ? "good" : "wait"}`);
  $("voice-state").dataset.voiceState = cur ? cur.state : "none";
  const who = [];
  if (cur) {
    who.push(...tx(cur.ours ? "voice.who_out" : "voice.who_in", { caller: said(cur.caller, null), peer }));
    if (cur.answered_at) who.push(" — ", ...tx("voice.answered", { who: said(cur.answered_by, null), dur: since(cur.answered_at) }));
  }
  const whoKey = cur ? `${cur.id}|${cur.state}|${S.lang}` : "";
  if ($("voice-who").dataset.key !== whoKey) { $("voice-who").replaceChildren(...who); $("voice-who").dataset.key = whoKey; }
  const mine = V.call && cur && V.call === cur.id;
  setText($("voice-mic"), !mine ? (cur ? t("voice.mic_none") : "")
    : t(V.muted ? "voice.mic_muted" : "voice.mic_on", { sent: window.redlineVoice.sent, heard: window.redlineVoice.heard }));
  $("voice-call").hidden = $("voice-test").hidden = !!cur;
  $("voice-call").disabled = $("voice-test").disabled =
    !S.status || !(S.status.lines.find((l) => l.line === S.line) || {}).synced;
  $("voice-hangup").hidden = !cur || (!cur.ours && cur.state === "ringing");
  $("voice-mute").hidden = !mine || cur.state !== "live";
  const paths = v.audio && (!cur || v.audio.call === cur.id) ? Object.entries(v.audio.paths) : [];
  reconcile($("voice-paths"), paths, ([p]) => p, ([p, x]) => h("tr", {},
    h("td", {}, p), h("td", {}, String(x.packets)), h("td", {}, String(x.first)),
    h("td", { class: x.silent_ms === null || x.silent_ms > 1000 ? "bad" : "good" },
      x.silent_ms === null ? "-" : t("voice.silent_ago", { dur: dur(x.silent_ms) }))));
  reconcile($("voice-calls"), [...v.calls].reverse().slice(0, 5), (c) => c.id, (c) => {
    const ev = c.audio.evidence;
    const evText = ev === "match" ? t("voice.evidence.match", { sent: c.audio.ours.sent.packets, received: c.audio.ours.received.packets })
      : ev === "mismatch" ? t("voice.evidence.mismatch") : c.answered_at && c.ended_at ? t("voice.evidence.pending") : "";
    return h("li", { "data-id": c.id, "data-state": c.state, "data-evidence": ev || "", "data-reason": c.reason || "" },
      tx("voice.row", { dir: t(c.ours ? "voice.dir.out" : "voice.dir.in"), at: utc(c.rang_at, true),
        state: h("span", { class: "call-state" }, callState(c)), by: c.answered_by ? t("voice.by", { who: c.answered_by }) : "" }),
      evText ? h("div", { class: ev === "mismatch" ? "bad" : ev === "match" ? "good" : "wait" }, evText) : null);
  });
}

// A call's state with why it ended or was declined: the reasons the stations file ("lost": the line
// was lost mid-call; "interrupted": a station stopped mid-call; "busy") in the reader's words, any
// other reason as the text it is (a person's words, or a peer's: never markup).
function callState(c) {
  const base = `voice.state.${c.state}`;
  if (!c.reason) return [t(base)];
  const known = `${base}.${c.reason}`;
  if (Object.hasOwn(window.REDLINE_STRINGS.en, known)) return [t(known)];
  return tx("voice.state.reason", { state: t(base), reason: said(c.reason, null) });
}

// -- verification --------------------------------------------------------------------------------------
async function runVerify() {
  setText($("verify-state"), t("verify.checking"), "state-word small wait");
  $("verify-state").dataset.i18n = "verify.checking";
  try { S.verify = await api("GET", "/api/verify"); renderVerify(S.verify); }
  catch (e) {
    setText($("verify-state"), t("verify.not_checked"), "state-word small bad");
    $("verify-detail").replaceChildren(e.status ? said(e.message, "en") : e.message);
  }
}
function renderVerify(v) {
  const el = $("verify-state");
  el.dataset.i18n = v.ok ? "verify.ok" : "verify.failed";
  setText(el, t(el.dataset.i18n), `state-word small ${v.ok ? "good" : "bad"}`);
  const j = (o) => Object.entries(o).map(([k, x]) => `${k} ${x}`).join(", ");
  // VERIFIED is a fact as of the check (at login, or VERIFY NOW): its age, first and counting on, so a
  // check from hours ago is never read as one of now.
  $("verify-detail").replaceChildren(h("div", { id: "verify-age" }, tx("verify.checked", { at: utc(v.checked_at, true), ago: since(v.checked_at) })),
    ...v.lines.map((l) => h("div", {},
      t("verify.line", { line: l.line.slice(0, 8), chains: j(l.chains), cosigned: j(l.cosigned), tail: j(l.one_sided_tail), cp: l.checkpoints }),
      l.problems.length ? h("div", { class: "bad" }, t("verify.problem"), said(l.problems[0], "en")) : null)));
}

// -- the one-second ticker: clock, countdowns, how long down, the sound ---------------------------------
function tick() {
  watchdog();
  if (!S.me) { updateTitle(); soundTick(); return; } // logged out while in use: the alarm goes on
  $("clock").textContent = utc(now(), true);
  if (S.day !== utcDay(now())) { const first = S.day === undefined; S.day = utcDay(now()); if (!first) rerenderAll(); } // midnight UTC: times gain their date
  for (const el of document.querySelectorAll(".countdown")) {
    const text = leftText(el.dataset.deadline);
    if (el.textContent !== text) el.textContent = text;
  }
  for (const el of document.querySelectorAll(".since")) {
    const text = dur(now() - Number(el.dataset.since));
    if (el.textContent !== text) el.textContent = text;
  }
  soundTick();
}

document.addEventListener("DOMContentLoaded", async () => {
  let lang = null;
  try { lang = localStorage.getItem("redline.lang"); } catch (e) { /* ignore */ }
  S.lang = lang && window.REDLINE_STRINGS[lang] ? lang : (navigator.language || "en").toLowerCase().startsWith("ru") ? "ru" : "en";
  try { S.silenced = new Set(JSON.parse(sessionStorage.getItem("redline.silenced") || "[]")); } catch (e) { /* ignore */ }
  try { S.loggedOut = Number(sessionStorage.getItem("redline.logged_out")) || null; } catch (e) { /* ignore */ }
  applyStatic();
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", async () => { try { await api("POST", "/api/logout"); } catch (e) { /* gone already */ } showLogin("", true); });
  $("confirm-form").addEventListener("submit", confirmCode);
  $("root-open").addEventListener("click", openRoot);
  $("root-form").addEventListener("submit", confirmRoot);
  $("root-cancel").addEventListener("click", () => $("root-dialog").close());
  $("verify-run").addEventListener("click", runVerify);
  $("sound-toggle").addEventListener("click", unlockAudio);
  $("notify-enable").addEventListener("click", async () => {
    try { await Notification.requestPermission(); } catch (e) { /* ignore */ }
    updateNotifyButton();
  });
  $("lang-select").addEventListener("change", async (e) => {
    const want = e.target.value;
    setLang(want);
    labelCountries();
    if (S.me) { try { await api("POST", "/api/console/settings", { lang: want }); } catch (err) { /* kept locally */ } }
  });
  $("line-select").addEventListener("change", (e) => { S.line = e.target.value; S.lastCounters = ""; S.watch = null; setExportLink(); refreshWatch(); if (S.status) setStatus(S.status); });
  document.addEventListener("submit", submitForm);
  document.addEventListener("redline-refresh", refreshViews); // "refresh now" (the console test waits on it)
  $("compose-priority").addEventListener("click", (e) => { const b = e.target.closest("[data-prio]"); if (b) choosePriority(b); });
  $("compose-text").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("compose-form").requestSubmit(); } });
  $("draw-start").addEventListener("click", startDraw);
  $("draw-shape").addEventListener("click", (e) => { const b = e.target.closest("[data-shape]"); if (b) chooseShape(b); });
  $("notice-amend-cancel").addEventListener("click", cancelAmend);
  $("log-search").addEventListener("submit", runSearch);
  $("log-clear").addEventListener("click", clearSearch);
  $("log-kind").addEventListener("change", () => runSearch());
  $("draw-finish").addEventListener("click", finishDraw);
  $("draw-clear").addEventListener("click", clearArea);
  $("notice-area").addEventListener("input", previewArea);
  $("notice-radius").addEventListener("input", previewArea);
  $("map-fit").addEventListener("click", fitNotices);
  $("voice-call").addEventListener("click", (e) => ringPeer(e.target));
  $("voice-call").after(h("button", { id: "voice-test", type: "button", dataset: { i18n: "voice.test" },
    onclick: (e) => voiceTest(e.target) }, t("voice.test")));
  $("voice-hangup").addEventListener("click", (e) => hangUp(e.target));
  $("voice-mute").addEventListener("click", toggleMute);
  // A skip link moves focus itself: following "#alarm-area" alone scrolls but leaves focus where it
  // was in some browsers, and the next Tab would start from the top bar again.
  for (const a of document.querySelectorAll("a.skip")) {
    a.addEventListener("click", (e) => { e.preventDefault(); document.querySelector(a.getAttribute("href")).focus(); });
  }
  $("translate-cancel").addEventListener("click", () => { $("translate-form").hidden = true; $("translate-pick").hidden = false; });
  // Any click or key on the page is the gesture a browser wants before it plays sound.
  document.addEventListener("pointerdown", unlockAudio, true);
  document.addEventListener("keydown", unlockAudio, true);
  setInterval(tick, 1000);
  try {
    const me = await fetch("/api/me", { credentials: "same-origin" });
    if (me.ok) await start(await me.json()); else showLogin("");
  } catch (e) { showLogin(t("login.lost")); }
});
