// The operators' live dashboard (issue 5, DESIGN §7). Plain script, no build step.
//
// Live figures are pushed over GET /api/v1/live/stream, read with fetch() because EventSource cannot send
// the bearer token; while the stream is down or missing, /live is polled every 5 s and the stream is
// retried with exponential backoff. The hour bars (last 24 h, /hours) and the CEMS-vs-calculation panels
// (last 7 days, /plants/{plant}/comparison) are hand-written SVG, refreshed every minute and at each new
// hour; so is each plant's compliance card (/plants/{plant}/compliance: the year to date against the
// allowances, with the projected year end and the share resting on substituted hours). Every figure
// carries a stable data-field (and each card data-stack="plant/stack") for tests. Numbers are rounded
// only here, for display.
"use strict";

const POLL_MS = 5000;
const CHART_MS = 60000;
const STREAM_IDLE_MS = 45000; // no byte (not even a keepalive) for this long: reconnect
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 60000;
const HOUR_MS = 3600000;
const DAY_MS = 86400000;
const DIGITS = {rate_t_h: 1, hour_to_date_t: 2, day_to_date_t: 1, month_to_date_t: 0, year_to_date_t: 0};
const STATUS = {
  valid: ["valid", "the latest closed minute is valid"],
  invalid: ["invalid", "the latest closed minute is invalid (analyser fault, calibration or out of range)"],
  stopped: ["stopped", "the unit is stopped (the latest minute is flagged stopped)"],
  stale: ["stale", "no reading for more than 5 minutes"],
  no_data: ["no data", "no reading received yet"],
  pending: ["pending", "readings are arriving; the first minute has not closed yet"],
  starting: ["starting", "the service is still starting"],
};
const HOUR_TEXT = {measured: "measured", substituted: "substituted", stopped: "stopped", missing: "missing",
                   in_progress: "in progress"};

const $ = (id) => document.getElementById(id);
const fmt = (v, d) => (v === null || v === undefined || Number.isNaN(v)) ? "–"
  : v.toLocaleString(undefined, {minimumFractionDigits: d, maximumFractionDigits: d});
const svgEl = (name, attrs = {}) => {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
};
const el = (name, attrs = {}, text) => {
  const e = document.createElement(name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};

const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
if (hashToken) { localStorage.setItem("cems-token", hashToken); history.replaceState(null, "", location.pathname); }

const state = {
  token: localStorage.getItem("cems-token"),
  stacks: [],             // [{plant, stack, name}] as /stacks lists them
  offsetMin: new Map(),   // plant -> UTC offset [min], read from the plant's own timestamps
  mode: "starting",       // push | poll | offline | auth
  pollTimer: null,
  streamCtl: null,
  streamRetry: null,
  backoffMs: BACKOFF_MIN_MS,
  started: false,
  gen: 0,                 // bumped by stopAll: callbacks of an earlier start() see a stale generation
};

// ---- API -----------------------------------------------------------------------------------------------

class AuthError extends Error {}

async function apiResponse(path, opts = {}) {
  const headers = {Authorization: "Bearer " + state.token, ...opts.headers};
  const r = await fetch("/api/v1" + path, {...opts, headers});
  if (r.status === 401 || r.status === 403) {
    stopAll();
    askToken(`Token refused (${r.status}): enter another.`);
    throw new AuthError(String(r.status));
  }
  return r;
}

async function api(path) {
  const r = await apiResponse(path);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function askToken(msg) {
  setMode("auth");
  $("login").hidden = false;
  $("note").textContent = msg || "";
  $("token").focus();
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("token").value.trim();
  localStorage.setItem("cems-token", state.token);
  $("login").hidden = true;
  $("note").textContent = "";
  start();
});

// ---- time in the plant's zone --------------------------------------------------------------------------

function learnOffset(plant, iso) {
  const m = /(?:([+-])(\d\d):?(\d\d)|Z)$/.exec(iso || "");
  if (m) state.offsetMin.set(plant, m[1] ? (m[1] === "-" ? -1 : 1) * (60 * +m[2] + +m[3]) : 0);
}

const offsetMs = (plant) => 60000 * (state.offsetMin.has(plant) ? state.offsetMin.get(plant)
                                                                 : -new Date().getTimezoneOffset());
const hourStart = (plant, t) => Math.floor((t + offsetMs(plant)) / HOUR_MS) * HOUR_MS - offsetMs(plant);
const localParts = (plant, t) => new Date(t + offsetMs(plant)); // read with getUTC*
const hh = (plant, t) => String(localParts(plant, t).getUTCHours()).padStart(2, "0");
const localDate = (plant, t) => localParts(plant, t).toISOString().slice(0, 10);

function age(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor(s % 3600 / 60)} min ago`;
  return `${Math.floor(s / 86400)} d ${Math.floor(s % 86400 / 3600)} h ago`;
}

// ---- cards ---------------------------------------------------------------------------------------------

const keyOf = (s) => `${s.plant}/${s.stack}`;
const cardOf = (key) => document.querySelector(`.card[data-stack="${CSS.escape(key)}"]`);

function buildCard(s) {
  const key = keyOf(s);
  const hid = "card-" + key.replace(/[^A-Za-z0-9_-]/g, "-");
  const card = el("article", {class: "card st-no_data", "data-stack": key, "aria-labelledby": hid});
  const head = el("div", {class: "card-head"});
  head.append(el("h3", {id: hid}, s.name),
              el("span", {class: "status", "data-field": "status", "data-value": ""}, "…"));
  const rate = el("p", {class: "rate"});
  rate.append(el("span", {class: "label"}, "Live rate"), el("span", {"data-field": "rate_t_h"}, "–"), " ",
              el("small", {}, "t/h"));
  const dl = el("dl", {class: "totals"});
  for (const [field, label] of [["hour_to_date_t", "Hour to date"], ["day_to_date_t", "Day to date"],
                                ["month_to_date_t", "Month to date"], ["year_to_date_t", "Year to date"]]) {
    const dd = el("dd");
    dd.append(el("span", {"data-field": field}, "–"), el("small", {}, " t"));
    const row = el("div");
    row.append(el("dt", {}, label), dd);
    dl.append(row);
  }
  const ageRow = el("div", {class: "age"});
  ageRow.append(el("dt", {}, "Last reading"), el("dd", {"data-field": "last_reading_age"}, "never"));
  dl.append(ageRow);
  const fig = el("figure", {class: "hours"});
  const cap = el("figcaption");
  cap.append(el("span", {}, "Last 24 hours, t CO₂ per hour"),
             el("span", {class: "summary", "data-field": "hours_summary"}));
  fig.append(cap, svgEl("svg", {"data-field": "hours_chart", role: "img", "aria-label": "loading",
                                viewBox: "0 0 480 130"}));
  card.append(head, el("p", {class: "id"}, key), rate, dl, fig);
  return card;
}

function setStatus(card, status) {
  const [text, hint] = STATUS[status] || [status, ""];
  const badge = card.querySelector('[data-field="status"]');
  badge.textContent = text;
  badge.dataset.value = status;
  badge.title = hint;
  card.className = "card st-" + status;
}

function showLive(body) {
  const key = keyOf(body);
  const card = cardOf(key);
  if (!card) { loadStacksSoon(); return; }
  learnOffset(body.plant, body.at || body.last_reading_at);
  for (const [field, digits] of Object.entries(DIGITS)) {
    card.querySelector(`[data-field="${field}"]`).textContent = fmt(body[field], digits);
  }
  setStatus(card, body.status);
  const ageEl = card.querySelector('[data-field="last_reading_age"]');
  ageEl.dataset.at = body.last_reading_at || "";
  ageEl.title = body.last_reading_at ? `newest reading at ${body.last_reading_at}` : "";
  card.dataset.at = body.at || "";
  tickAge(ageEl);
  $("note").textContent = "updated " + new Date().toLocaleTimeString();
}

function tickAge(ageEl) {
  const at = ageEl.dataset.at;
  const secs = at ? (Date.now() - Date.parse(at)) / 1000 : null;
  ageEl.textContent = secs === null ? "never" : age(secs);
  ageEl.classList.toggle("late", secs !== null && secs > 120);
}

setInterval(() => document.querySelectorAll('[data-field="last_reading_age"]').forEach(tickAge), 1000);

function showStarting(key) {
  const card = cardOf(key);
  if (card && !card.querySelector('[data-field="status"]').dataset.value) setStatus(card, "starting");
}

async function loadStacks() {
  const {items} = await api("/stacks");
  const same = items.length === state.stacks.length && items.every((s, i) => keyOf(s) === keyOf(state.stacks[i]));
  for (const s of items) learnOffset(s.plant, s.last_reading_at);
  if (same) return false;
  state.stacks = items;
  $("cards").replaceChildren(...items.map(buildCard));
  const plants = [...new Set(items.map((s) => s.plant))];
  $("plants").replaceChildren(...plants.map(buildPlant));
  $("compliance").replaceChildren(...plants.map(buildCompliance));
  if (!items.length) $("cards").append(el("p", {class: "empty"}, "This token may not see any stack."));
  return true;
}

let stacksTimer = null;
function loadStacksSoon() {
  clearTimeout(stacksTimer);
  stacksTimer = setTimeout(() => loadStacks().then((changed) => changed && refreshAll()).catch(chartError), 500);
}

// ---- live: push, with polling as the fallback -----------------------------------------------------------

function setMode(mode, detail = "") {
  state.mode = mode;
  const c = $("connection");
  c.dataset.value = mode;
  c.textContent = {push: "● Live: updates pushed", poll: "◌ Polling every 5 s", offline: "✕ API unreachable",
                   auth: "Token needed", starting: "connecting…"}[mode] + (detail ? ` (${detail})` : "");
}

async function pollLive() {
  await Promise.all(state.stacks.map(async (s) => {
    const r = await apiResponse(`/stacks/${encodeURIComponent(s.plant)}/${encodeURIComponent(s.stack)}/live`);
    if (r.status === 503) { showStarting(keyOf(s)); return; }
    if (!r.ok) throw new Error(`live ${keyOf(s)}: HTTP ${r.status}`);
    showLive(await r.json());
  }));
}

function startPolling() {
  if (state.pollTimer) return;
  const tick = () => pollLive().then(() => {
    if (state.mode === "offline") setMode("poll", "live stream unavailable");
  }).catch(report);
  tick();
  state.pollTimer = setInterval(tick, POLL_MS);
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = null;
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split(/\r\n|\r|\n/)) {
    if (!line || line.startsWith(":")) continue; // comment, e.g. ": keepalive"
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? {event, data: data.join("\n")} : null;
}

async function readStream() {
  const ctl = new AbortController();
  state.streamCtl = ctl;
  let idle = null;
  const kick = () => { clearTimeout(idle); idle = setTimeout(() => ctl.abort(), STREAM_IDLE_MS); };
  kick();
  const connectedAt = Date.now();
  try {
    const r = await apiResponse("/live/stream", {headers: {Accept: "text/event-stream"}, cache: "no-store",
                                                 signal: ctl.signal});
    if (!r.ok || !r.body) throw new Error(r.status === 404 ? "no live stream here" : `stream: HTTP ${r.status}`);
    setMode("push");
    stopPolling();
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      kick();
      buf += value;
      let m;
      while ((m = /\r\n\r\n|\n\n|\r\r/.exec(buf))) {
        const ev = parseEvent(buf.slice(0, m.index));
        buf = buf.slice(m.index + m[0].length);
        if (ev && ev.event === "live") {
          let body = null;
          try { body = JSON.parse(ev.data); } catch { continue; } // one bad event is no reason to reconnect
          showLive(body);
        }
      }
    }
    throw new Error("live stream closed");
  } finally {
    clearTimeout(idle);
    if (Date.now() - connectedAt > 30000) state.backoffMs = BACKOFF_MIN_MS; // it had been working
  }
}

function connectStream() {
  clearTimeout(state.streamRetry);
  const gen = state.gen;
  readStream().catch((e) => {
    if (e instanceof AuthError || gen !== state.gen) return;
    const wait = state.backoffMs * (0.8 + 0.4 * Math.random());
    state.backoffMs = Math.min(BACKOFF_MAX_MS, state.backoffMs * 2);
    setMode(state.mode === "offline" ? "offline" : "poll",
            `${e.name === "AbortError" ? "live stream silent" : e.message}; next try in ${Math.round(wait / 1000)} s`);
    startPolling();
    state.streamRetry = setTimeout(connectStream, wait);
  });
}

// ---- hour bars (last 24 h) ------------------------------------------------------------------------------

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map((f) => f * p).find((x) => x >= v);
}

async function loadHours(s) {
  const now = Date.now();
  const current = hourStart(s.plant, now);
  const start = new Date(current - 23 * HOUR_MS).toISOString();
  const end = new Date(current + HOUR_MS).toISOString();
  const path = `/stacks/${encodeURIComponent(s.plant)}/${encodeURIComponent(s.stack)}/hours`;
  const {items} = await api(`${path}?start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}`);
  const byStart = new Map(items.map((i) => [Date.parse(i.start), i]));
  const slots = [];
  for (let k = 23; k >= 0; k--) {
    const t = current - k * HOUR_MS;
    const item = byStart.get(t) || null;
    slots.push({t, item, current: k === 0, status: item ? item.status : (k === 0 ? "in_progress" : "missing")});
  }
  drawHours(s, slots);
}

// Charts are drawn at the pixel width of their box (so text is never stretched) and redrawn on resize.
const widthOf = (box) => Math.max(240, Math.round(box.getBoundingClientRect().width) || 480);

function drawHours(s, slots) {
  const card = cardOf(keyOf(s));
  if (!card) return;
  card.hourSlots = slots;
  const W = widthOf(card.querySelector("figure.hours")), H = 130, L = 36, R = 2, T = 8, B = 18;
  const pw = W - L - R, ph = H - T - B, slotW = pw / slots.length, barW = slotW * 0.78;
  const max = niceMax(Math.max(0, ...slots.map((x) => (x.item && x.item.co2_t) || 0)));
  const y = (v) => T + ph - ph * Math.min(v, max) / max;
  const svg = svgEl("svg", {"data-field": "hours_chart", viewBox: `0 0 ${W} ${H}`, role: "img",
                            "data-hours": String(slots.length), width: W, height: H});
  for (const v of [0, max / 2, max]) {
    svg.append(svgEl("line", {class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v)}));
    const label = svgEl("text", {class: "axis", x: L - 4, y: y(v) + 3.5, "text-anchor": "end"});
    label.textContent = fmt(v, max / 2 >= 10 || v === 0 ? 0 : 1);
    svg.append(label);
  }
  const counts = {measured: 0, substituted: 0, stopped: 0, missing: 0};
  slots.forEach((slot, i) => {
    const x = L + i * slotW + (slotW - barW) / 2;
    const co2 = slot.item ? slot.item.co2_t : null;
    const g = svgEl("g", {class: "hour" + (slot.current ? " provisional" : ""), "data-status": slot.status,
                          "data-start": slot.item ? slot.item.start : new Date(slot.t).toISOString()});
    if (slot.item) g.dataset.final = String(slot.item.final);
    if (co2 !== null) g.dataset.co2T = String(co2);
    if (slot.status in counts) counts[slot.status] += 1;
    const full = {x, width: barW, y: T, height: ph};
    if (slot.status === "missing") {
      g.append(svgEl("rect", {...full, class: "h-missing"}));
    } else if (slot.status === "in_progress") {
      g.append(svgEl("rect", {...full, class: "h-provisional"}));
    } else if (slot.status === "stopped") {
      g.append(svgEl("rect", {...full, class: "h-stopped-bg"}));
      g.append(svgEl("rect", {x, width: barW, y: T + ph - 4, height: 4, class: "h-stopped"}));
    } else if (co2 === null) { // a substitute not yet computed
      g.append(svgEl("rect", {...full, class: "h-" + slot.status + " pending"}));
    } else {
      g.append(svgEl("rect", {x, width: barW, y: y(co2), height: Math.max(1, T + ph - y(co2)),
                              class: "h-" + slot.status}));
    }
    const title = svgEl("title");
    const until = hh(s.plant, slot.t + HOUR_MS);
    title.textContent = `${hh(s.plant, slot.t)}:00–${until}:00 ${HOUR_TEXT[slot.status] || slot.status}` +
      (co2 !== null ? `, ${fmt(co2, 2)} t` : "") + (slot.item && !slot.item.final ? " (provisional)" : "");
    g.append(title);
    svg.append(g);
    if (i % 3 === 0 || slot.current) {
      const label = svgEl("text", {class: "axis", x: x + barW / 2, y: H - 5, "text-anchor": "middle"});
      label.textContent = hh(s.plant, slot.t);
      svg.append(label);
    }
  });
  const summary = Object.entries(counts).filter(([, n]) => n).map(([k, n]) => `${n} ${HOUR_TEXT[k]}`).join(" · ");
  svg.setAttribute("aria-label", `Hourly CO2 mass, last 24 hours: ${summary || "no hours"}`);
  card.querySelector('[data-field="hours_chart"]').replaceWith(svg);
  card.querySelector('[data-field="hours_summary"]').textContent = summary;
}

// ---- CEMS vs calculation (last 7 days per plant) --------------------------------------------------------

function buildPlant(plant) {
  const sec = el("section", {class: "plant", "data-plant": plant, "aria-labelledby": "plant-" + plant});
  sec.append(el("h3", {id: "plant-" + plant}, `Plant ${plant}`),
             el("div", {class: "cmp", "data-field": "comparison", "data-value": "loading"}, "loading…"));
  return sec;
}

async function loadComparison(plant) {
  const now = Date.now();
  const start = localDate(plant, now - 6 * DAY_MS);
  const end = localDate(plant, now + DAY_MS);
  const r = await apiResponse(`/plants/${encodeURIComponent(plant)}/comparison?start=${start}&end=${end}`);
  const box = document.querySelector(`.plant[data-plant="${CSS.escape(plant)}"] [data-field="comparison"]`);
  if (!box) return;
  if (r.status === 404) { noFuel(box, "no fuel data"); return; }
  if (!r.ok) { noFuel(box, `comparison unavailable (HTTP ${r.status})`, "error"); return; }
  const {items} = await r.json();
  // Without fuel records the calculation is null every day: nothing to compare.
  if (!items || !items.some((i) => i.calculated_t !== null && i.calculated_t !== undefined)) {
    noFuel(box, "no fuel data");
    return;
  }
  const days = [];
  for (let k = 6; k >= 0; k--) days.push(localDate(plant, now - k * DAY_MS));
  const byDate = new Map(items.map((i) => [i.date, i]));
  box.dataset.value = "ok";
  box.days = {days, byDate};
  const wrap = el("div", {class: "table-wrap"});
  wrap.append(comparisonTable(days, byDate));
  box.replaceChildren(drawComparison(widthOf(box), days, byDate), wrap);
}

function noFuel(box, text, value = "no_fuel_data") {
  box.dataset.value = value;
  box.replaceChildren(el("p", {class: "nodata"}, text[0].toUpperCase() + text.slice(1) + " for the last 7 days."));
}

function drawComparison(W, days, byDate) {
  const H = 120, L = 40, R = 2, T = 8, B = 18;
  const pw = W - L - R, ph = H - T - B, slotW = pw / days.length, barW = slotW * 0.34;
  const values = days.flatMap((d) => byDate.has(d) ? [byDate.get(d).cems_t, byDate.get(d).calculated_t] : []);
  const max = niceMax(Math.max(0, ...values.filter((v) => v !== null && v !== undefined)));
  const y = (v) => T + ph - ph * Math.min(v, max) / max;
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "data-field": "comparison_chart",
                            "aria-label": "Daily CO2, CEMS beside the fuel calculation; flagged days marked",
                            width: W, height: H});
  for (const v of [0, max / 2, max]) {
    svg.append(svgEl("line", {class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v)}));
    const label = svgEl("text", {class: "axis", x: L - 4, y: y(v) + 3.5, "text-anchor": "end"});
    label.textContent = fmt(v, 0);
    svg.append(label);
  }
  days.forEach((d, i) => {
    const item = byDate.get(d);
    const x0 = L + i * slotW;
    const g = svgEl("g", {class: "day", "data-date": d});
    if (item && item.flagged) {
      g.classList.add("flagged");
      g.append(svgEl("rect", {class: "c-flag", x: x0 + 1, width: slotW - 2, y: T, height: ph}));
    }
    for (const [j, field, cls] of [[0, "cems_t", "c-cems"], [1, "calculated_t", "c-calc"]]) {
      const v = item ? item[field] : null;
      if (v === null || v === undefined) continue;
      const x = x0 + slotW / 2 - barW + j * barW;
      g.append(svgEl("rect", {class: cls, x, width: barW - 1, y: y(v), height: Math.max(1, T + ph - y(v))}));
    }
    const title = svgEl("title");
    title.textContent = item ? `${d}: CEMS ${fmt(item.cems_t, 1)} t, calculation ${fmt(item.calculated_t, 1)} t, ` +
      `deviation ${fmtPct(item.deviation_pct)}${item.flagged ? ", flagged" : ""}` : `${d}: no data`;
    g.append(title);
    const label = svgEl("text", {class: "axis" + (item && item.flagged ? " flag-label" : ""), x: x0 + slotW / 2,
                                 y: H - 5, "text-anchor": "middle"});
    label.textContent = (item && item.flagged ? "⚑ " : "") + d.slice(5);
    g.append(label);
    svg.append(g);
  });
  return svg;
}

const fmtPct = (v) => (v === null || v === undefined) ? "–" : (v > 0 ? "+" : "") + fmt(v, 1) + " %";

function comparisonTable(days, byDate) {
  const table = el("table", {class: "cmp-table"});
  table.append(el("caption", {class: "sr-only"}, "Daily CO2: CEMS against the fuel calculation"));
  const head = el("tr");
  for (const h of ["Day", "CEMS t", "Fuel calc. t", "Deviation", ""]) head.append(el("th", {scope: "col"}, h));
  const thead = el("thead");
  thead.append(head);
  table.append(thead);
  const body = el("tbody");
  for (const d of [...days].reverse()) {
    const item = byDate.get(d);
    if (!item) continue;
    const tr = el("tr", {"data-date": d, class: item.flagged ? "flagged" : ""});
    const note = el("td", {class: "flag"}, item.flagged ? "⚑ flagged " : "");
    if (!item.final) note.append(el("small", {}, "provisional"));
    const day = el("th", {scope: "row"});
    day.append(el("time", {datetime: d, title: d}, d.slice(5)));
    tr.append(day, el("td", {"data-field": "cems_t"}, fmt(item.cems_t, 1)),
              el("td", {"data-field": "calculated_t"}, fmt(item.calculated_t, 1)),
              el("td", {"data-field": "deviation_pct"}, fmtPct(item.deviation_pct)), note);
    body.append(tr);
  }
  table.append(body);
  return table;
}

// ---- compliance: the year to date against the allowances (per plant) ---------------------------------------

const complianceOf = (plant) => document.querySelector(`.compliance[data-plant="${CSS.escape(plant)}"]`);
const fmtT = (v) => fmt(v, 0);
const fmtShare = (v) => (v === null || v === undefined) ? "–" : fmt(100 * v, 1) + " %";

function buildCompliance(plant) {
  const box = el("article", {class: "compliance", "data-plant": plant, "data-value": "loading",
                             "aria-labelledby": "cy-" + plant});
  const head = el("div", {class: "card-head"});
  head.append(el("h3", {id: "cy-" + plant}, `Plant ${plant}`), el("span", {class: "year", "data-field": "year"}));
  const fig = el("figure", {class: "cy-bar"});
  fig.append(svgEl("svg", {"data-field": "compliance_bar", role: "img", "aria-label": "loading",
                           viewBox: "0 0 480 52"}));
  const dl = el("dl", {class: "totals"});
  const row = (field, label, unit, labelField) => {
    const dd = el("dd");
    dd.append(el("span", {"data-field": field}, "–"), el("small", {}, unit));
    const div = el("div");
    div.append(el("dt", labelField ? {"data-field": labelField} : {}, label), dd);
    dl.append(div);
  };
  row("emissions_t", "Emitted so far", " t");
  row("allowances_t", "Allowances", " t");
  row("surplus_t", "Surplus", " t", "surplus_label");
  row("projection_t", "Projected year end", " t");
  row("substituted_share", "On substituted hours", "");
  row("calculated_t", "Fuel calculation", " t");
  box.append(head, fig, dl, el("p", {class: "cy-note", "data-field": "hours"}),
             el("p", {class: "cy-note", "data-field": "compliance_note"}));
  return box;
}

async function loadCompliance(plant) {
  const r = await apiResponse(`/plants/${encodeURIComponent(plant)}/compliance`);
  const box = complianceOf(plant);
  if (!box) return;
  if (!r.ok) {
    box.dataset.value = "unavailable";
    box.querySelector('[data-field="compliance_note"]').textContent =
      `Compliance figures unavailable (HTTP ${r.status}).`;
    return;
  }
  showCompliance(box, await r.json());
}

function showCompliance(box, body) {
  box.body = body;
  const set = (field, text) => { box.querySelector(`[data-field="${field}"]`).textContent = text; };
  const hasAllowances = body.allowances_t !== null && body.allowances_t !== undefined;
  const deficit = hasAllowances && body.surplus_t < 0;
  box.dataset.value = !hasAllowances ? "no_allowances" : deficit ? "deficit" : "surplus";
  set("year", String(body.year));
  set("emissions_t", fmtT(body.emissions_t));
  set("allowances_t", fmtT(body.allowances_t));
  set("surplus_label", deficit ? "Deficit" : "Surplus");
  set("surplus_t", hasAllowances ? fmtT(Math.abs(body.surplus_t)) : "–");
  set("projection_t", fmtT(body.projection_t));
  set("substituted_share", fmtShare(body.substituted_share));
  set("calculated_t", fmtT(body.calculated_t));
  const h = body.hours;
  set("hours", `Stack-hours: ${fmt(h.measured, 0)} measured · ${fmt(h.substituted, 0)} substituted · ` +
               `${fmt(h.stopped, 0)} stopped · ${fmt(h.missing, 0)} missing`);
  const byYear = (body.projections || []).find((p) => p.method === "previous_year");
  const notes = [];
  if (body.projection_t !== null) {
    notes.push(`Projection at the year-to-date run rate` + (byYear && byYear.projection_t !== null
      ? `; ${fmtT(byYear.projection_t)} t by last year's profile.` : "."));
  }
  if (!hasAllowances) notes.push(`No allowances set for ${body.year}.`);
  else if (body.projected_surplus_t !== null && body.projected_surplus_t < 0) {
    notes.push(`At this rate the year ends ${fmtT(-body.projected_surplus_t)} t short.`);
  }
  set("compliance_note", notes.join(" "));
  const proj = box.querySelector('[data-field="projection_t"]');
  proj.title = (body.projections || []).map((p) => `${p.method}: ${p.basis}`).join("\n");
  proj.closest("dd").classList.toggle("over", hasAllowances && body.projected_surplus_t !== null &&
                                                body.projected_surplus_t < 0);
  box.querySelector('[data-field="surplus_t"]').closest("dd").classList.toggle("deficit", deficit);
  drawComplianceBar(box, body);
}

function drawComplianceBar(box, body) {
  const fig = box.querySelector("figure.cy-bar");
  const W = widthOf(fig), H = 52, L = 2, R = 12, T = 10, BH = 18;
  const emitted = body.emissions_t || 0;
  const substituted = Math.min(emitted, body.substituted_t || 0);
  const allowances = body.allowances_t, projection = body.projection_t;
  const max = niceMax(Math.max(emitted, allowances || 0, projection || 0));
  const x = (v) => L + (W - L - R) * Math.min(Math.max(v, 0), max) / max;
  const svg = svgEl("svg", {"data-field": "compliance_bar", viewBox: `0 0 ${W} ${H}`, role: "img",
                            width: W, height: H});
  svg.append(svgEl("rect", {class: "cy-track", x: L, y: T, width: W - L - R, height: BH}));
  svg.append(svgEl("rect", {class: "y-measured", x: L, y: T, height: BH,
                            width: Math.max(0, x(emitted - substituted) - L)}));
  if (substituted > 0) {
    svg.append(svgEl("rect", {class: "h-substituted", x: x(emitted - substituted), y: T, height: BH,
                              width: Math.max(1, x(emitted) - x(emitted - substituted))}));
  }
  const mark = (v, cls, label) => {
    const g = svgEl("g", {class: cls});
    g.append(svgEl("line", {x1: x(v), x2: x(v), y1: T - 6, y2: T + BH + 6}));
    const title = svgEl("title");
    title.textContent = `${label}: ${fmtT(v)} t`;
    g.append(title);
    svg.append(g);
  };
  if (projection !== null && projection !== undefined) {
    mark(projection, "mark-projection" + (allowances !== null && projection > allowances ? " over" : ""),
         "projected year end");
  }
  if (allowances !== null && allowances !== undefined) mark(allowances, "mark-allowances", "allowances");
  for (const v of [0, max / 2, max]) {
    const anchor = v === 0 ? "start" : v === max ? "end" : "middle";
    const label = svgEl("text", {class: "axis", x: x(v), y: H - 2, "text-anchor": anchor});
    label.textContent = fmt(v, 0);
    svg.append(label);
  }
  svg.setAttribute("aria-label", `Emitted ${fmtT(emitted)} t` +
    (allowances !== null ? ` of ${fmtT(allowances)} t allowances` : " (no allowances set)") +
    (projection !== null ? `, projected ${fmtT(projection)} t by year end` : "") +
    `; ${fmtShare(body.substituted_share)} on substituted hours`);
  fig.querySelector('[data-field="compliance_bar"]').replaceWith(svg);
}

// ---- wiring ---------------------------------------------------------------------------------------------

function report(e) {
  if (e instanceof AuthError) return;
  setMode("offline", e.message);
}

function chartError(e) {
  if (e instanceof AuthError) return;
  $("chart-note").textContent = "Charts not updated: " + e.message;
}

async function refreshCharts() {
  await Promise.all([
    ...state.stacks.map((s) => loadHours(s)),
    ...[...new Set(state.stacks.map((s) => s.plant))].flatMap((p) => [loadComparison(p), loadCompliance(p)]),
  ]);
  $("chart-note").textContent = "";
}

function refreshAll() {
  if (!state.started) return;
  loadStacks().then(() => refreshCharts()).catch(chartError);
}

let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const s of state.stacks) {
      const card = cardOf(keyOf(s));
      if (card && card.hourSlots) drawHours(s, card.hourSlots);
    }
    for (const box of document.querySelectorAll('[data-field="comparison"]')) {
      const chart = box.querySelector('[data-field="comparison_chart"]');
      if (box.days && chart) chart.replaceWith(drawComparison(widthOf(box), box.days.days, box.days.byDate));
    }
    for (const box of document.querySelectorAll(".compliance")) if (box.body) drawComplianceBar(box, box.body);
  }, 150);
});

let chartTimer = null;
let hourTimer = null;
function scheduleNextHour() {
  clearTimeout(hourTimer);
  const now = Date.now();
  const plants = state.stacks.length ? state.stacks.map((s) => s.plant) : [""];
  const next = Math.min(...plants.map((p) => hourStart(p, now) + HOUR_MS));
  hourTimer = setTimeout(() => { refreshAll(); scheduleNextHour(); }, next - now + 5000);
}

function stopAll() {
  state.started = false;
  state.gen += 1;
  stopPolling();
  clearTimeout(state.streamRetry);
  clearInterval(chartTimer);
  clearTimeout(hourTimer);
  if (state.streamCtl) state.streamCtl.abort();
}

async function start() {
  stopAll();
  if (!state.token) { askToken("Enter an API token to see live figures."); return; }
  state.started = true;
  state.backoffMs = BACKOFF_MIN_MS;
  try {
    await loadStacks();
  } catch (e) {
    report(e);
    if (!(e instanceof AuthError)) state.streamRetry = setTimeout(start, POLL_MS);
    return;
  }
  connectStream();
  // Fill the cards at once (the stream then keeps them current); the charts after, once the plants'
  // UTC offsets are known from their timestamps.
  pollLive().catch(report).then(() => refreshCharts()).catch(chartError);
  chartTimer = setInterval(refreshAll, CHART_MS);
  scheduleNextHour();
}

start();
