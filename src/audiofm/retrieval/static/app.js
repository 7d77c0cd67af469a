// audiofm serve: query box → /api/search → a list of results with audio players.
"use strict";

const form = document.getElementById("search");
const box = document.getElementById("q");
const count = document.getElementById("k");
const statusLine = document.getElementById("status");
const list = document.getElementById("results");

function duration(seconds) {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(r)}` : `${m}:${two(r)}`;
}

function element(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function show(data, ms) {
  list.replaceChildren();
  for (const hit of data.results) {
    const li = element("li", "hit");
    li.dataset.rank = hit.rank;
    const head = element("div", "head");
    const name = hit.path.split("/").pop();
    head.append(element("span", "name", name), element("span", "score", hit.score.toFixed(3)),
                element("span", "duration", duration(hit.duration)));
    const folder = hit.path.includes("/") ? hit.path.slice(0, hit.path.lastIndexOf("/") + 1) : "";
    const where = element("div", "path muted", folder || "\u00a0");
    where.title = hit.path;
    const player = element("audio");
    player.controls = true;
    player.preload = "metadata";
    player.src = hit.audio;
    li.append(head, where, player);
    list.append(li);
  }
  const n = data.results.length;
  statusLine.textContent = `${n} result${n === 1 ? "" : "s"} for “${data.query}” (${ms} ms)`;
  statusLine.dataset.state = "done";
}

async function search(event) {
  if (event) event.preventDefault();
  const q = box.value.trim();
  if (!q) return;
  statusLine.textContent = "searching…";
  statusLine.dataset.state = "busy";
  const t0 = performance.now();
  try {
    const r = await fetch(`/api/search?q=${encodeURIComponent(q)}&k=${count.value}`);
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.statusText);
    show(data, Math.round(performance.now() - t0));
    history.replaceState(null, "", `?q=${encodeURIComponent(q)}`);
  } catch (err) {
    list.replaceChildren();
    statusLine.textContent = `error: ${err.message}`;
    statusLine.dataset.state = "error";
  }
}

form.addEventListener("submit", search);

fetch("/api/info").then((r) => r.json()).then((info) => {
  document.getElementById("info").textContent = `${info.files} files · model ${info.model} · index ${info.index}`;
});

const initial = new URLSearchParams(location.search).get("q");
if (initial) { box.value = initial; search(); }
