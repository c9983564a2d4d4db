// Sallyport dashboard: reads the API (../api/...) and the Prometheus endpoint (../metrics,
// when it is served on the same entrypoint) every few seconds and renders them. Every value
// from the configuration is inserted as text, never as HTML.
"use strict";

const REFRESH_MS = 5000;
const PROTOCOLS = ["http", "tcp", "udp"];
let previous = null; // {at, requests, tcp, udp} from the last metrics scrape

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return { body: await response.json(), next: response.headers.get("X-Next-Page") };
}

// Every page of a list endpoint.
async function getList(path) {
  const all = [];
  let page = 1;
  for (let guard = 0; guard < 100; guard++) {
    const { body, next } = await getJson(`${path}?per_page=500&page=${page}`);
    if (Array.isArray(body)) all.push(...body);
    const nextPage = Number(next);
    if (!next || !Number.isInteger(nextPage) || nextPage <= page) break;
    page = nextPage;
  }
  return all;
}

function statusCell(status) {
  return el("td", { class: `status ${status || ""}` }, status || "");
}

function errorsCell(item) {
  const errors = Array.isArray(item.error) ? item.error : item.error ? [item.error] : [];
  return el("td", { class: "errors" }, errors.join("; "));
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

function renderOverview(overview) {
  const cards = [];
  for (const protocol of PROTOCOLS) {
    const section = overview[protocol] || {};
    for (const kind of ["routers", "services", "middlewares"]) {
      const counts = section[kind];
      if (!counts) continue;
      cards.push(
        el("div", { class: "card", "data-overview": `${protocol}-${kind}` },
          el("div", { class: "label" }, `${protocol.toUpperCase()} ${kind}`),
          el("div", { class: "value" }, counts.total ?? 0),
          el("div", { class: "counts" },
            el("span", { class: "status warning" }, `${counts.warnings ?? 0} warnings`),
            el("span", { class: "status disabled" }, `${counts.errors ?? 0} errors`))));
    }
  }
  document.getElementById("overview").replaceChildren(...cards);
}

function serversOf(service) {
  const lb = service.loadBalancer;
  if (!lb || !Array.isArray(lb.servers)) return null;
  const status = service.serverStatus || {};
  return el("ul", { class: "servers" }, ...lb.servers.map((server) => {
    const where = server.url || server.address || "";
    const state = status[where];
    return el("li", {}, where, state ? " " : "", state ? el("span", { class: state }, state) : null);
  }));
}

function typeOf(item) {
  if (item.type) return item.type;
  for (const key of ["loadBalancer", "weighted", "mirroring", "failover"]) {
    if (item[key]) return key.toLowerCase();
  }
  return "";
}

async function refreshConfiguration() {
  const [overview, entrypoints] = await Promise.all([
    getJson("../api/overview").then((r) => r.body),
    getList("../api/entrypoints"),
  ]);
  renderOverview(overview);
  fill("entrypoints", entrypoints.map((ep) =>
    el("tr", {}, el("td", { class: "name" }, ep.name), el("td", {}, ep.address || ""))));

  const lists = {};
  await Promise.all(PROTOCOLS.flatMap((protocol) =>
    ["routers", "services", "middlewares"]
      .filter((kind) => !(protocol === "udp" && kind === "middlewares"))
      .map(async (kind) => {
        lists[`${protocol}-${kind}`] = await getList(`../api/${protocol}/${kind}`);
      })));

  const rows = (kind, render) => PROTOCOLS.flatMap((protocol) =>
    (lists[`${protocol}-${kind}`] || []).map((item) => {
      const row = render(protocol, item);
      row.className = item.status || "";
      return row;
    }));
  fill("routers", rows("routers", (protocol, r) => el("tr", {},
    statusCell(r.status), el("td", {}, protocol.toUpperCase()), el("td", { class: "name" }, r.name),
    el("td", { class: "rule" }, r.rule || ""), el("td", {}, (r.entryPoints || []).join(", ")),
    el("td", { class: "name" }, r.service || ""), errorsCell(r))));
  fill("services", rows("services", (protocol, s) => el("tr", {},
    statusCell(s.status), el("td", {}, protocol.toUpperCase()), el("td", { class: "name" }, s.name),
    el("td", {}, typeOf(s)), el("td", {}, serversOf(s)), errorsCell(s))));
  fill("middlewares", rows("middlewares", (protocol, m) => el("tr", {},
    statusCell(m.status), el("td", {}, protocol.toUpperCase()), el("td", { class: "name" }, m.name),
    el("td", {}, typeOf(m)), errorsCell(m))));
}

// Sums of the counters and gauges the cards show, whatever the metric prefix.
function parseMetrics(text) {
  const sums = { requests: 0, open: 0, tcp: 0, udp: 0, seen: false };
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([^\s]+)/.exec(line);
    if (!match) continue;
    const [, name, , raw] = match;
    const value = Number(raw);
    if (!Number.isFinite(value)) continue;
    if (/_entrypoint_requests_total$/.test(name)) { sums.requests += value; sums.seen = true; }
    else if (/_open_connections$/.test(name) && !/_tcp_open_connections$/.test(name)) sums.open += value;
    else if (/_tcp_connections_total$/.test(name)) sums.tcp += value;
    else if (/_udp_sessions_total$/.test(name)) sums.udp += value;
  }
  return sums;
}

async function refreshRates() {
  const set = (id, value) => { document.getElementById(id).textContent = value; };
  let text;
  try {
    const response = await fetch("../metrics");
    if (!response.ok) throw new Error(String(response.status));
    text = await response.text();
  } catch (_) {
    for (const id of ["rate-requests", "open-connections", "rate-tcp", "rate-udp"]) set(id, "–");
    document.getElementById("rates").title = "metrics are not served on this entrypoint";
    return;
  }
  const now = { at: performance.now(), ...parseMetrics(text) };
  set("open-connections", String(now.open));
  if (previous) {
    const seconds = Math.max((now.at - previous.at) / 1000, 0.001);
    const rate = (a, b) => Math.max(0, (a - b) / seconds).toFixed(1);
    set("rate-requests", rate(now.requests, previous.requests));
    set("rate-tcp", rate(now.tcp, previous.tcp));
    set("rate-udp", rate(now.udp, previous.udp));
  }
  previous = now;
}

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  const problem = document.getElementById("problem");
  try {
    await Promise.all([refreshConfiguration(), refreshRates()]);
    problem.hidden = true;
    document.getElementById("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (error) {
    problem.hidden = false;
    problem.textContent = `cannot read the API: ${error.message}`;
  } finally {
    busy = false;
  }
}

getJson("../api/version")
  .then(({ body }) => { document.getElementById("version").textContent = `v${body.Version || ""}`; })
  .catch(() => {});
refresh();
// A second scrape soon after the first, so the rates show without waiting a full period.
setTimeout(() => { refreshRates().catch(() => {}); }, 1000);
setInterval(refresh, REFRESH_MS);
