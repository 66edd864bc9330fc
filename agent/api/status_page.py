"""The status page: one self-contained HTML document (inline CSS and JS, no outside assets) that
polls /api/status and draws it. Every value is set with textContent, never as HTML, so nothing in
the snapshot (pool URLs, event messages) can inject markup.

Elements carry ids and `data-value` (the raw number) so tests and scrapers can read them:
#hashrate, #uptime, #shares-<bucket>, #guardian-state/-reason (tuner, thermal too),
rows #chain-<id> with .c-hashrate/.c-temp..., rows #pool-<i> with .p-url/.p-status...,
#fan-<i>, #chips-<chain> (one cell per chip), #events."""

from __future__ import annotations

import json

_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>doge-agent</title>
<style>
:root { --bg:#0f1418; --card:#182027; --line:#26313b; --fg:#e6edf3; --dim:#8b98a5;
        --ok:#3fb950; --warn:#d29922; --bad:#f85149; --accent:#c9a227; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display:flex; flex-wrap:wrap; align-items:center; gap:.5rem 1rem; padding:.8rem 1rem;
         background:var(--card); border-bottom:1px solid var(--line); }
header h1 { margin:0; font-size:1.15rem; color:var(--accent); }
header .meta { color:var(--dim); font-size:.85rem; }
#conn { margin-left:auto; font-size:.8rem; padding:.1rem .5rem; border-radius:1rem;
  background:var(--line); }
#conn.ok { color:var(--ok); } #conn.bad { color:var(--bad); }
main { padding: .8rem; display:grid; gap:.8rem;
  grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); max-width: 1400px; margin: 0 auto; }
section { background:var(--card); border:1px solid var(--line); border-radius:.6rem; padding:.8rem;
  min-width:0; }
section.wide { grid-column: 1 / -1; }
h2 { margin:0 0 .6rem; font-size:.8rem; letter-spacing:.06em; text-transform:uppercase;
  color:var(--dim); }
.big { font-size:2rem; font-weight:600; font-variant-numeric: tabular-nums; }
.kv { display:grid; grid-template-columns: repeat(auto-fit, minmax(100px,1fr)); gap:.5rem;
  margin-top:.6rem; }
.kv div { background:var(--bg); border-radius:.4rem; padding:.4rem .5rem; }
.kv b { display:block; font-size:1.05rem; font-variant-numeric: tabular-nums; }
.kv span { color:var(--dim); font-size:.75rem; }
.state { display:flex; gap:.6rem; align-items:baseline; margin:.3rem 0; flex-wrap:wrap; }
.state .name { width:5.5rem; color:var(--dim); font-size:.85rem; }
.badge { font-weight:600; padding:.05rem .5rem; border-radius:.3rem; background:var(--line); }
.badge.good { color:var(--ok); } .badge.warn { color:var(--warn); } .badge.bad { color:var(--bad); }
.reason { color:var(--dim); font-size:.85rem; overflow-wrap:anywhere; }
.scroll { overflow-x:auto; }
table { width:100%; border-collapse:collapse; font-variant-numeric: tabular-nums; font-size:.9rem; }
th, td { text-align:right; padding:.3rem .4rem; border-bottom:1px solid var(--line);
  white-space:nowrap; }
th:first-child, td:first-child { text-align:left; }
th { color:var(--dim); font-weight:500; font-size:.75rem; text-transform:uppercase; }
td.url { text-align:left; white-space:normal; overflow-wrap:anywhere; min-width:10rem; }
.hot { color:var(--bad); font-weight:600; } .warm { color:var(--warn); }
.chips { display:grid; grid-template-columns: repeat(auto-fill, minmax(14px, 1fr)); gap:2px;
  margin:.3rem 0 .7rem; }
.chip { height:14px; border-radius:2px; background:var(--line); }
.chiphead { display:flex; justify-content:space-between; font-size:.8rem; color:var(--dim);
  flex-wrap:wrap; gap:.5rem; }
#events { list-style:none; margin:0; padding:0; max-height: 18rem; overflow-y:auto;
  font-size:.85rem; }
#events li { padding:.25rem 0; border-bottom:1px solid var(--line); overflow-wrap:anywhere; }
#events time { white-space:nowrap; color:var(--dim); margin-right:.5rem;
  font-variant-numeric: tabular-nums; }
#events .kind { color:var(--accent); margin-right:.4rem; }
.empty { color:var(--dim); font-size:.85rem; }
@media (max-width: 480px) {
  .big { font-size:1.6rem; } main { padding:.5rem; gap:.5rem; }
  th, td { padding:.25rem .25rem; font-size:.8rem; } .opt { display:none; }
  td.url { min-width:6rem; }
}
</style>
</head>
<body>
<header>
  <h1>doge-agent</h1>
  <span class="meta">v<span id="version">?</span> · up <span id="uptime">?</span></span>
  <span id="conn">connecting…</span>
</header>
<main>
  <section>
    <h2>Hashrate</h2>
    <div class="big" id="hashrate" data-value="">–</div>
    <div class="kv">
      <div><b id="shares-accepted">–</b><span>accepted</span></div>
      <div><b id="shares-rejected">–</b><span>rejected</span></div>
      <div><b id="shares-stale">–</b><span>stale</span></div>
      <div><b id="shares-hw_errors">–</b><span>HW errors</span></div>
      <div><b id="shares-below_target">–</b><span>below target</span></div>
      <div><b id="nonces">–</b><span>nonces</span></div>
    </div>
  </section>
  <section>
    <h2>Control loops</h2>
    <div class="state"><span class="name">Guardian</span>
      <span class="badge" id="guardian-state">–</span>
      <span class="reason" id="guardian-reason"></span></div>
    <div class="state"><span class="name">Thermal</span>
      <span class="badge" id="thermal-state">–</span>
      <span class="reason" id="thermal-reason"></span></div>
    <div class="state"><span class="name">Tuner</span>
      <span class="badge" id="tuner-state">–</span>
      <span class="reason" id="tuner-reason"></span></div>
  </section>
  <section>
    <h2>Fans</h2>
    <div class="kv" id="fans"><span class="empty">no fans</span></div>
  </section>
  <section class="wide">
    <h2>Hash boards</h2>
    <div class="scroll"><table id="chains">
      <thead><tr><th>Chain</th><th>Chips</th><th class="opt">MHz</th><th>Hashrate</th>
        <th>Temp</th><th class="opt">Nonces</th><th>HW err</th></tr></thead>
      <tbody></tbody>
    </table></div>
  </section>
  <section class="wide">
    <h2>Pools</h2>
    <div class="scroll"><table id="pools">
      <thead><tr><th class="opt">#</th><th style="text-align:left">URL</th><th>Status</th>
        <th>Acc.</th><th>Rej.</th><th>Latency</th></tr></thead>
      <tbody></tbody>
    </table></div>
  </section>
  <section class="wide">
    <h2>Chips</h2>
    <div id="chipmap"><span class="empty">no per-chip data yet</span></div>
  </section>
  <section class="wide">
    <h2>Recent events</h2>
    <ul id="events"><li class="empty">none</li></ul>
  </section>
</main>
<script>
"use strict";
const REFRESH_MS = __REFRESH_MS__;
const UNITS = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s"];
function fmtHash(h) {
  if (typeof h !== "number" || !isFinite(h) || h < 0) return "–";
  let i = 0;
  while (h >= 1000 && i < UNITS.length - 1) { h /= 1000; i++; }
  return h.toFixed(2) + " " + UNITS[i];
}
function fmtTemp(t) { return (typeof t === "number" && isFinite(t)) ? t.toFixed(1) + " °C" : "–"; }
function fmtInt(n) { return (typeof n === "number" && isFinite(n)) ? String(Math.round(n)) : "–"; }
function fmtMs(n) { return (typeof n === "number" && isFinite(n)) ? n.toFixed(0) + " ms" : "–"; }
function fmtDur(s) {
  if (typeof s !== "number" || !isFinite(s)) return "?";
  s = Math.floor(s); const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
  m = Math.floor(s % 3600 / 60);
  return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m + "m " + (s % 60) + "s";
}
function $(id) { return document.getElementById(id); }
function set(el, text, value) {
  if (!el) return;
  el.textContent = text;
  if (value !== undefined) el.dataset.value = value === null ? "" : String(value);
}
function cell(tr, cls, text, value) {
  const td = document.createElement("td");
  td.className = cls; set(td, text, value); tr.appendChild(td); return td;
}
function badgeClass(kind, state) {
  const good = { guardian: ["mine"], thermal: ["ok", "normal", "cool"], tuner: ["idle", "stable",
    "tuned", "done"] };
  const bad = ["pause", "paused", "off", "tripped", "dangerous", "emergency", "failed", "error"];
  if ((good[kind] || []).includes(state)) return "badge good";
  if (bad.includes(state)) return "badge bad";
  return "badge warn";
}
function tempClass(t) {
  return typeof t !== "number" ? "" : t >= 75 ? "hot" : t >= 65 ? "warm" : "";
}

function render(s) {
  set($("version"), s.version || "?");
  set($("uptime"), fmtDur(s.uptime_s), s.uptime_s);
  set($("hashrate"), fmtHash(s.hashrate_hs), s.hashrate_hs);
  set($("nonces"), fmtInt(s.nonces), s.nonces);
  for (const k of ["accepted", "rejected", "stale", "hw_errors", "below_target"])
    set($("shares-" + k), fmtInt(s.shares && s.shares[k]), s.shares && s.shares[k]);
  for (const k of ["guardian", "thermal", "tuner"]) {
    const part = s[k] || {};
    const b = $(k + "-state"); set(b, part.state || "–"); b.className = badgeClass(k, part.state);
    set($(k + "-reason"), part.reason || "");
  }
  const fans = $("fans"); fans.replaceChildren();
  (s.fans || []).forEach((f, i) => {
    const d = document.createElement("div"); d.id = "fan-" + i;
    const b = document.createElement("b");
      set(b, f.rpm == null ? "–" : fmtInt(f.rpm) + " rpm", f.rpm);
    const sp = document.createElement("span");
    sp.textContent = "fan " + i + " · " +
      (typeof f.duty_pct === "number" ? f.duty_pct.toFixed(0) : "–") + " %";
    d.append(b, sp); fans.appendChild(d);
  });
  if (!(s.fans || []).length) { const e = document.createElement("span"); e.className = "empty";
    e.textContent = "no fans"; fans.appendChild(e); }

  const cb = document.querySelector("#chains tbody"); cb.replaceChildren();
  for (const c of s.chains || []) {
    const tr = document.createElement("tr"); tr.id = "chain-" + c.id;
    cell(tr, "c-id", String(c.id));
    cell(tr, "c-chips", fmtInt(c.chips), c.chips);
    cell(tr, "c-freq opt", typeof c.frequency_mhz === "number" ? c.frequency_mhz.toFixed(1) : "–",
      c.frequency_mhz);
    cell(tr, "c-hashrate", fmtHash(c.hashrate_hs), c.hashrate_hs);
    const t = cell(tr, "c-temp", fmtTemp(c.temp_c), c.temp_c);
    if (tempClass(c.temp_c)) t.classList.add(tempClass(c.temp_c));
    cell(tr, "c-nonces opt", fmtInt(c.nonces), c.nonces);
    cell(tr, "c-hw", fmtInt(c.hw_errors), c.hw_errors);
    cb.appendChild(tr);
  }
  const pb = document.querySelector("#pools tbody"); pb.replaceChildren();
  (s.pools || []).forEach((p, i) => {
    const tr = document.createElement("tr"); tr.id = "pool-" + i;
    cell(tr, "p-index opt", String(i));
    cell(tr, "p-url url", p.url);
    const st = cell(tr, "p-status", p.status);
    st.style.color = p.status === "alive" ? "var(--ok)" : "var(--warn)";
    cell(tr, "p-accepted", fmtInt(p.accepted), p.accepted);
    cell(tr, "p-rejected", fmtInt(p.rejected), p.rejected);
    cell(tr, "p-latency", fmtMs(p.latency_ms), p.latency_ms);
    pb.appendChild(tr);
  });

  const map = $("chipmap"); map.replaceChildren();
  const byChain = new Map();
  for (const ch of s.chips || []) { if (!byChain.has(ch.chain)) byChain.set(ch.chain, []);
    byChain.get(ch.chain).push(ch); }
  if (!byChain.size) { const e = document.createElement("span"); e.className = "empty";
    e.textContent = "no per-chip data yet"; map.appendChild(e); }
  for (const [chain, chips] of byChain) {
    const rates = chips.map(c => c.hashrate_hs || 0);
    const max = Math.max(...rates, 1e-9), mean = rates.reduce((a, b) => a + b, 0) / rates.length;
    const head = document.createElement("div"); head.className = "chiphead";
    const l = document.createElement("span");
      l.textContent = "chain " + chain + " · " + chips.length + " chips";
    const r = document.createElement("span");
    r.textContent = "per chip: min " + fmtHash(Math.min(...rates)) + " · avg " + fmtHash(mean) +
      " · max " + fmtHash(max);
    head.append(l, r);
    const grid = document.createElement("div"); grid.className = "chips";
      grid.id = "chips-" + chain;
    for (const c of chips) {
      const d = document.createElement("div"); d.className = "chip";
      const n = c.nonces || 0, hw = c.hw_errors || 0, frac = (c.hashrate_hs || 0) / max;
      const bad = c.status !== "ok" || (n >= 20 && hw / n > 0.05);
      d.style.background = bad ? "var(--bad)" : "hsl(" + Math.round(40 + 80 * frac) + ",60%," +
        Math.round(22 + 28 * frac) + "%)";
      d.dataset.value = String(c.hashrate_hs);
      const bits = ["chain " + chain + " chip " + c.id + ": " + fmtHash(c.hashrate_hs),
        n + " nonces", hw + " HW errors"];
      if (c.temp_c != null) bits.push(fmtTemp(c.temp_c));
      if (c.frequency_mhz != null) bits.push(c.frequency_mhz + " MHz");
      if (c.status !== "ok") bits.push(c.status);
      d.title = bits.join(", ");
      grid.appendChild(d);
    }
    map.append(head, grid);
  }
  const ev = $("events"); ev.replaceChildren();
  for (const e of (s.events || []).slice(0, 50)) {
    const li = document.createElement("li");
    const t = document.createElement("time");
      t.textContent = new Date(e.time * 1000).toLocaleTimeString();
    const k = document.createElement("span"); k.className = "kind"; k.textContent = e.kind;
    const m = document.createElement("span"); m.textContent = e.message;
    li.append(t, k, m); ev.appendChild(li);
  }
  if (!(s.events || []).length) { const li = document.createElement("li"); li.className = "empty";
    li.textContent = "none"; ev.appendChild(li); }
}

let inflight = false;
async function refresh() {
  if (inflight) return;
  inflight = true;
  const conn = $("conn");
  try {
    const r = await fetch("/api/status", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    conn.textContent = "live · " + new Date().toLocaleTimeString(); conn.className = "ok";
    document.body.dataset.loaded = "1";
  } catch (e) {
    conn.textContent = "offline"; conn.className = "bad";
  } finally { inflight = false; }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"""


def render_status_page(refresh_s: float) -> str:
    """The page, polling /api/status every `refresh_s` seconds (at least 0.5 s)."""
    ms = max(500, int(refresh_s * 1000))
    return _PAGE.replace("__REFRESH_MS__", json.dumps(ms))
