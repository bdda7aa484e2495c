// Live cards: one per stack, refreshed every 5 s from the API (issue 5 adds charts and push updates).
const fmt = (v, d = 1) => (v === null || v === undefined) ? "–" : v.toLocaleString(undefined, {minimumFractionDigits: d, maximumFractionDigits: d});
const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
if (hashToken) { localStorage.setItem("cems-token", hashToken); history.replaceState(null, "", location.pathname); }
let token = localStorage.getItem("cems-token");

async function api(path) {
  const r = await fetch("/api/v1" + path, {headers: {Authorization: "Bearer " + token}});
  if (r.status === 401 || r.status === 403) { askToken("Token refused (" + r.status + ")"); throw new Error("auth"); }
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function askToken(msg) {
  document.getElementById("login").hidden = false;
  document.getElementById("note").textContent = msg || "";
}

document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  token = document.getElementById("token").value.trim();
  localStorage.setItem("cems-token", token);
  document.getElementById("login").hidden = true;
  refresh();
});

function card(s, live) {
  const el = document.createElement("section");
  el.className = "card";
  el.dataset.stack = s.plant + "/" + s.stack;
  const age = live.last_reading_at ? Math.round((Date.now() - Date.parse(live.last_reading_at)) / 1000) + " s ago" : "never";
  el.innerHTML = `
    <h2>${s.name}</h2><div class="id">${s.plant}/${s.stack} · <span class="status ${live.status}">${live.status}</span></div>
    <div class="rate" data-field="rate_t_h">${fmt(live.rate_t_h)} <small>t/h</small></div>
    <dl>
      <dt>Hour to date</dt><dd data-field="hour_to_date_t">${fmt(live.hour_to_date_t, 2)} t</dd>
      <dt>Day to date</dt><dd data-field="day_to_date_t">${fmt(live.day_to_date_t, 1)} t</dd>
      <dt>Month to date</dt><dd data-field="month_to_date_t">${fmt(live.month_to_date_t, 0)} t</dd>
      <dt>Year to date</dt><dd data-field="year_to_date_t">${fmt(live.year_to_date_t, 0)} t</dd>
      <dt>Last reading</dt><dd>${age}</dd>
    </dl>`;
  return el;
}

async function refresh() {
  if (!token) { askToken("Enter an API token to see live figures."); return; }
  try {
    const {items} = await api("/stacks");
    const lives = await Promise.all(items.map((s) => api(`/stacks/${s.plant}/${s.stack}/live`).catch(() => ({status: "no_data"}))));
    const main = document.getElementById("cards");
    main.replaceChildren(...items.map((s, i) => card(s, lives[i])));
    document.getElementById("note").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e.message !== "auth") document.getElementById("note").textContent = "API unreachable: " + e.message;
  }
}
refresh();
setInterval(refresh, 5000);
