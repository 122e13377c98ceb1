// The dashboard: numbers from /stats and /healthz every 2 s, a rate chart, a live tail through the
// Tidings client (one shared connection), and a test publish that measures publish → deliver.
// With a publisher key on the hub, nothing is read until the operator gives a token.
import { publish, subscribe, TidingsError } from "/dashboard/tidings.js";
import { drawRates } from "/dashboard/chart.js";

const $ = (id) => document.getElementById(id);
const SPAN = 5 * 60 * 1000;
const EVERY = 2000;
const TAIL = 200;
const hub = location.origin;

const state = {
  open: false,
  token: sessionStorage.getItem("tidings.token") || "",
  history: [],
  previous: undefined,
  tail: undefined,
  sent: new Map(),
  latencies: [],
  timer: undefined,
};

/** A token in the address's fragment (`/#token=...`, never sent to a server) is taken and removed. */
function tokenFromHash() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (!token) return false;
  state.token = token;
  sessionStorage.setItem("tidings.token", token);
  history.replaceState(null, "", location.pathname + location.search);
  return true;
}
tokenFromHash();
addEventListener("hashchange", () => {
  if (!tokenFromHash()) return;
  $("token").value = "••••••••";
  notice(state.open ? $("notice").textContent : "");
  restart();
});

function authHeaders() {
  return state.token ? { authorization: `Bearer ${state.token}` } : {};
}

function notice(text, bad = false) {
  const el = $("notice");
  el.hidden = !text;
  el.textContent = text || "";
  el.className = bad ? "bad" : "";
}

function allowed() {
  return state.open || state.token !== "";
}

async function start() {
  try {
    const info = await (await fetch("/dashboard/info.json", { cache: "no-store" })).json();
    state.open = info.open === true;
  } catch {
    state.open = false;
  }
  $("mode").textContent = state.open ? "open development mode" : "token required";
  $("mode").className = state.open ? "badge open" : "badge";
  if (state.open) {
    notice("Open development mode: this hub has no publisher key, so anyone who can reach it may publish, and this page needs no token.");
  } else if (!state.token) {
    notice("This hub requires a token: paste an operator token (a JWT signed with the hub's key, with mercure.subscribe and mercure.publish) above.");
  }
  $("token").value = state.token ? "••••••••" : "";
  restart();
}

function restart() {
  clearInterval(state.timer);
  state.tail?.close();
  state.tail = undefined;
  if (!allowed()) return;
  refresh();
  state.timer = setInterval(refresh, EVERY);
  follow($("tail-topic").value.trim() || "*");
}

async function refresh() {
  const now = Date.now();
  let stats;
  try {
    const response = await fetch("/stats", { headers: authHeaders(), cache: "no-store" });
    if (!response.ok) throw new Error(`/stats answered ${response.status}`);
    stats = await response.json();
  } catch (e) {
    notice(`Cannot read the hub's numbers: ${e.message}`, true);
    return;
  }
  for (const key of ["subscribers", "subscribed_topics", "events_stored", "slow_disconnects"]) {
    $(key).textContent = key in stats ? format(stats[key]) : "n/a";
  }
  const prev = state.previous;
  if (prev && typeof stats.published === "number" && typeof stats.delivered === "number") {
    const dt = (now - prev.t) / 1000;
    const point = {
      t: now,
      pub: Math.max(0, (stats.published - prev.published) / dt),
      del: Math.max(0, (stats.delivered - prev.delivered) / dt),
    };
    state.history.push(point);
    state.history = state.history.filter((p) => p.t >= now - SPAN);
    $("publish_rate").textContent = rate(point.pub);
    $("delivery_rate").textContent = rate(point.del);
  }
  state.previous = { t: now, published: stats.published, delivered: stats.delivered };
  // The window grows with the page's age, from one minute up to five.
  const age = now - (state.history[0]?.t ?? now);
  drawRates($("chart"), state.history, Math.min(SPAN, Math.max(60_000, age)), now);
  raw(stats);
  health();
}

async function health() {
  try {
    const response = await fetch("/healthz", { cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    $("health").textContent = body.status || (response.ok ? "ok" : `HTTP ${response.status}`);
    $("health").className = response.ok ? "ok" : "degraded";
    $("health-reason").textContent = body.reason || "";
  } catch {
    $("health").textContent = "unreachable";
    $("health").className = "degraded";
  }
}

function raw(stats) {
  const rows = [];
  for (const [key, value] of Object.entries(stats)) {
    const tr = document.createElement("tr");
    const k = document.createElement("td");
    const v = document.createElement("td");
    k.textContent = key;
    v.textContent = typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
    tr.append(k, v);
    rows.push(tr);
  }
  $("raw").tBodies[0].replaceChildren(...rows);
}

function follow(topic) {
  state.tail?.close();
  $("tail").replaceChildren();
  state.tail = subscribe({
    hub,
    topics: [topic],
    share: false,
    getToken: () => state.token || undefined,
    onEvent: (event) => {
      const sent = state.sent.get(event.id);
      if (sent !== undefined) {
        state.sent.delete(event.id);
        measured(performance.now() - sent);
      }
      tailLine(event);
    },
    onStatus: (status, transport) => {
      $("tail-status").textContent = `${status}${status === "closed" ? "" : ` (${transport})`}`;
    },
    onError: (error) => {
      if (error.kind === "auth" || error.fatal) notice(`Live tail: ${error.message}`, true);
    },
    onGap: () => tailLine({ id: "", type: "gap", data: "the hub could not replay everything: some events were missed" }),
  });
}

function tailLine(event) {
  const li = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  const type = document.createElement("span");
  type.className = "type";
  type.textContent = ` ${event.type} `;
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = `${event.id} `;
  const data = document.createElement("span");
  data.textContent = event.data.length > 300 ? `${event.data.slice(0, 300)}…` : event.data;
  li.append(time, type, id, data);
  const list = $("tail");
  list.prepend(li);
  while (list.children.length > TAIL) list.lastElementChild.remove();
}

function measured(ms) {
  state.latencies.push(ms);
  if (state.latencies.length > 50) state.latencies.shift();
  const sorted = [...state.latencies].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  $("latency").textContent = `${ms.toFixed(1)} ms`;
  $("latency-note").textContent = `median ${median.toFixed(1)} ms of ${sorted.length} test events`;
}

$("publish-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  let data = String(form.get("data") || "");
  try {
    data = JSON.parse(data);
  } catch {
    // Not JSON: published as the text it is.
  }
  const id = `dashboard-${crypto.randomUUID()}`;
  const event = { topic: String(form.get("topic")), id, data, private: form.get("private") === "on" };
  const type = String(form.get("type") || "").trim();
  if (type) event.type = type;
  state.sent.set(id, performance.now());
  try {
    await publish({ hub, token: state.token || undefined }, event);
    $("publish-result").textContent = `stored as ${id}`;
  } catch (error) {
    state.sent.delete(id);
    $("publish-result").textContent = error instanceof TidingsError ? error.message : String(error);
  }
});

$("tail-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (allowed()) follow($("tail-topic").value.trim() || "*");
});

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("token").value.trim();
  if (value.startsWith("••")) return;
  state.token = value;
  if (value) sessionStorage.setItem("tidings.token", value);
  else sessionStorage.removeItem("tidings.token");
  $("token").value = value ? "••••••••" : "";
  notice(allowed() ? "" : "This hub requires a token.");
  restart();
});

function format(n) {
  return typeof n === "number" ? n.toLocaleString("en") : String(n ?? "–");
}

function rate(v) {
  return v >= 100 ? Math.round(v).toLocaleString("en") : v.toFixed(1);
}

start();
