// Warren's management UI: a single page over the management API (/api/...), with no
// build step and no network access beyond the node (uPlot, for the charts, is served
// by the node too). Views are picked by the URL's hash: #/, #/queues,
// #/queue/VHOST/NAME, #/exchanges, #/exchange/VHOST/NAME, #/connections, #/channels,
// #/cluster, #/tree/NODE. Every view refreshes itself while it is shown.
"use strict";

const REFRESH_MS = 5000;
const LIVE_MS = 2000;
let auth = sessionStorage.getItem("warren.auth");
let timer = null;
let generation = 0;
let charts = [];
let overviewInfo = null;

// ----- helpers -----------------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const enc = encodeURIComponent;
const fmt = (n) => (n === undefined || n === null ? "" : Number(n).toLocaleString("en-US"));
const rate = (d) => (d && typeof d.rate === "number" ? d.rate.toFixed(1) + "/s" : "");

function bytes(n) {
  if (n === undefined || n === null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}

function toast(text, bad) {
  const t = $("#toast");
  t.textContent = text;
  t.className = bad ? "bad" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
}

class ApiError extends Error {
  constructor(status, reason) { super(reason); this.status = status; }
}

// Calls the API; the parsed answer (null for none). Throws ApiError with the node's
// reason; a 401 on any call but a login check shows the login form again.
async function api(method, path, body, extra) {
  // X-Requested-With: a refused login comes back as an answer, not a browser dialog.
  const headers = { Authorization: "Basic " + auth, "X-Requested-With": "XMLHttpRequest" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  Object.assign(headers, extra || {});
  const resp = await fetch("/api" + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!resp.ok) {
    const reason = (data && data.reason) || resp.statusText;
    if (resp.status === 401 && path === "/whoami") showLogin(reason);
    throw new ApiError(resp.status, reason);
  }
  return data;
}

// Runs an action from a form or button: reports its error, refreshes on success.
async function act(what, fn) {
  try {
    await fn();
    toast(what);
    route();
  } catch (e) {
    toast(e.message, true);
  }
}

function table(columns, rows, opts = {}) {
  const head = columns.map((c) => {
    const cls = [c.num ? "num" : "", c.sort ? "sortable" : "",
      opts.sort === c.sort && c.sort ? "sorted" : "",
      opts.sort === c.sort && opts.reverse ? "reverse" : ""].join(" ");
    return `<th class="${cls}" ${c.sort ? `data-sort="${esc(c.sort)}"` : ""}>${esc(c.title)}</th>`;
  }).join("");
  const body = rows.length
    ? rows.map((r) => `<tr>${columns.map((c) => `<td class="${c.num ? "num" : ""}">${c.cell(r)}</td>`).join("")}</tr>`).join("")
    : `<tr><td colspan="${columns.length}" class="muted">${esc(opts.empty || "Nothing here.")}</td></tr>`;
  return `<table data-testid="${esc(opts.testid || "table")}"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function props(obj) {
  return `<dl class="props">${Object.entries(obj).map(([k, v]) =>
    `<dt>${esc(k)}</dt><dd>${typeof v === "object" && v !== null ? `<pre>${esc(JSON.stringify(v, null, 2))}</pre>` : esc(v)}</dd>`).join("")}</dl>`;
}

function vhostOptions(vhosts, selected) {
  return vhosts.map((v) => `<option ${v.name === selected ? "selected" : ""}>${esc(v.name)}</option>`).join("");
}

function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}

function parseJsonField(text, what) {
  if (!text || !text.trim()) return {};
  try { return JSON.parse(text); } catch (e) { throw new Error(`${what} is not JSON: ${e.message}`); }
}

// ----- login -------------------------------------------------------------------

function showLogin(reason) {
  auth = null;
  sessionStorage.removeItem("warren.auth");
  clearInterval(timer);
  generation++;
  $("#nav").hidden = true;
  $("#who").hidden = true;
  $("#view").innerHTML = "";
  $("#login").hidden = false;
  $("#login-error").textContent = reason || "";
}

$("#login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = formData(ev.target);
  auth = btoa(unescape(encodeURIComponent(`${f.user}:${f.password}`)));
  try {
    const me = await api("GET", "/whoami");
    sessionStorage.setItem("warren.auth", auth);
    start(me);
  } catch (e) {
    $("#login-error").textContent = e.message;
  }
});

$("#logout").addEventListener("click", () => showLogin(""));

async function start(me) {
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#who").hidden = false;
  $("#user-name").textContent = `${me.name} (${me.tags.join(", ") || "no tags"})`;
  try {
    overviewInfo = await api("GET", "/overview");
    $("#node-name").textContent = overviewInfo.node || "";
  } catch (_) { /* shown by the views */ }
  route();
}

// ----- routing -----------------------------------------------------------------

const views = {
  "": overview, queues, queue, exchanges, exchange, connections, channels, cluster, tree,
};

// Each route() starts a generation: renders and refreshes of an earlier one (still
// in flight when the user moved on) write into their own detached element, and its
// refresh timer stops, so a view never shows another's data.

function route() {
  if (!auth) return;
  const gen = ++generation;
  const decode = (p) => { try { return decodeURIComponent(p); } catch (_) { return p; } };
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decode);
  const name = parts[0] || "";
  const view = views[name] || overview;
  document.querySelectorAll("nav a").forEach((a) => {
    const v = a.dataset.view;
    a.classList.toggle("active", v === (name || "overview") || (v + "s" === name) ||
      (name === "queue" && v === "queues") || (name === "exchange" && v === "exchanges"));
  });
  clearInterval(timer);
  timer = null;
  charts.forEach((c) => c.destroy());
  charts = [];
  const root = document.createElement("div");
  $("#view").replaceChildren(root);
  const args = parts.slice(1);
  const failed = (e) => {
    if (gen === generation) root.innerHTML = `<div class="card error" data-testid="view-error">${esc(e.message)}</div>`;
  };
  view(root, args).then(() => {
    if (gen !== generation || !view.live) return;
    timer = setInterval(() => {
      if (gen === generation) view.live(root, args).catch(() => {});
    }, view.every || REFRESH_MS);
  }, failed);
}

window.addEventListener("hashchange", route);

// ----- overview ----------------------------------------------------------------

async function overview(root) {
  root.innerHTML = `
    <h2>Overview</h2>
    <div class="totals" id="totals" data-testid="totals"></div>
    <div class="charts">
      <div class="card"><h3>Message rates</h3><div id="chart-rates" data-testid="chart-rates"></div></div>
      <div class="card"><h3>Queued messages</h3><div id="chart-queued" data-testid="chart-queued"></div></div>
    </div>
    <div class="card"><h3>Listeners</h3><div id="listeners"></div></div>`;
  const width = () => Math.max(360, ($("#chart-rates", root).clientWidth || 480) - 10);
  const series = (labels, colours) => [{}].concat(labels.map((l, i) => ({ label: l, stroke: colours[i], width: 2 })));
  charts = [
    new uPlot({ width: width(), height: 220, series: series(["publish", "deliver / get", "ack", "confirm"], ["#3a6ea5", "#2e8b57", "#d98e04", "#8e44ad"]), axes: [{}, { label: "msg/s" }] },
      [[], [], [], [], []], $("#chart-rates", root)),
    new uPlot({ width: width(), height: 220, series: series(["ready", "unacked"], ["#3a6ea5", "#c0392b"]), axes: [{}, { label: "messages" }] },
      [[], [], []], $("#chart-queued", root)),
  ];
  await overview.live(root);
}
overview.every = LIVE_MS;
overview.live = async (root) => {
  // The node's rates are for monitoring users; others see their own totals only.
  const [o, samples] = await Promise.all([api("GET", "/overview"), api("GET", "/warren/rates?age=300").catch(() => [])]);
  overviewInfo = o;
  const t = o.object_totals, q = o.queue_totals, m = o.message_stats || {};
  const tiles = [
    ["connections", t.connections], ["channels", t.channels], ["queues", t.queues],
    ["consumers", t.consumers], ["exchanges", t.exchanges], ["ready", q.messages_ready],
    ["unacked", q.messages_unacknowledged], ["publish", rate(m.publish_details)],
    ["deliver / get", rate(m.deliver_get_details)], ["ack", rate(m.ack_details)],
  ];
  $("#totals", root).innerHTML = tiles.map(([k, v]) =>
    `<div class="total" data-testid="total-${esc(k.replace(/[^a-z]/g, ""))}"><div class="n">${typeof v === "number" ? fmt(v) : esc(v)}</div><div class="k">${esc(k)}</div></div>`).join("");
  $("#listeners", root).innerHTML = table(
    [{ title: "Protocol", cell: (l) => esc(l.protocol) }, { title: "Address", cell: (l) => esc(l.ip_address) }, { title: "Port", num: true, cell: (l) => esc(l.port) }],
    o.listeners || [], { testid: "listeners", empty: "Shown to monitoring users." });
  // Samples come newest first, one a second; rates are the differences.
  const s = samples.slice().reverse();
  const times = [], pub = [], del = [], ack = [], conf = [], ready = [], unacked = [];
  for (let i = 1; i < s.length; i++) {
    const dt = Math.max(0.001, (s[i].timestamp - s[i - 1].timestamp) / 1000);
    times.push(s[i].timestamp / 1000);
    pub.push(Math.max(0, (s[i].publish - s[i - 1].publish) / dt));
    del.push(Math.max(0, (s[i].deliver_get - s[i - 1].deliver_get) / dt));
    ack.push(Math.max(0, (s[i].ack - s[i - 1].ack) / dt));
    conf.push(Math.max(0, (s[i].confirm - s[i - 1].confirm) / dt));
    ready.push(s[i].messages_ready);
    unacked.push(s[i].messages_unacknowledged);
  }
  if (charts.length === 2) {
    charts[0].setData([times, pub, del, ack, conf]);
    charts[1].setData([times, ready, unacked]);
  }
};

// ----- queues ------------------------------------------------------------------

const queueList = { page: 1, sort: "name", reverse: false, filter: "", regex: false };

async function queues(root) {
  const vhosts = await api("GET", "/vhosts");
  root.innerHTML = `
    <h2>Queues</h2>
    <div class="toolbar">
      <input id="queue-filter" data-testid="queue-filter" placeholder="Filter by name" value="${esc(queueList.filter)}">
      <label><input type="checkbox" id="queue-regex" ${queueList.regex ? "checked" : ""}> regular expression</label>
    </div>
    <div id="queue-table"></div>
    <div class="card"><h3>Add a queue</h3>
      <form class="inline" id="add-queue" data-testid="add-queue">
        <label>Vhost <select name="vhost">${vhostOptions(vhosts, "/")}</select></label>
        <label>Name <input name="name" required data-testid="add-queue-name"></label>
        <label>Type <select name="type" data-testid="add-queue-type"><option>classic</option><option>quorum</option><option>stream</option></select></label>
        <label>Durable <select name="durable"><option value="true">yes</option><option value="false">no</option></select></label>
        <label>Arguments (JSON) <input name="arguments" placeholder='{"x-max-length": 1000}'></label>
        <button type="submit" data-testid="add-queue-submit">Add queue</button>
      </form>
    </div>`;
  let typing;
  $("#queue-filter", root).addEventListener("input", (ev) => {
    clearTimeout(typing);
    typing = setTimeout(() => { queueList.filter = ev.target.value; queueList.page = 1; queues.live(root); }, 250);
  });
  $("#queue-regex", root).addEventListener("change", (ev) => { queueList.regex = ev.target.checked; queues.live(root); });
  $("#add-queue", root).addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = formData(ev.target);
    act(`Queue '${f.name}' added`, async () => {
      const args = parseJsonField(f.arguments, "arguments");
      args["x-queue-type"] = f.type;
      await api("PUT", `/queues/${enc(f.vhost)}/${enc(f.name)}`,
        { durable: f.durable === "true", auto_delete: false, arguments: args });
    });
  });
  await queues.live(root);
}
queues.live = async (root) => {
  const q = new URLSearchParams({
    page: queueList.page, page_size: 50, sort: queueList.sort, sort_reverse: queueList.reverse,
  });
  if (queueList.filter) { q.set("name", queueList.filter); q.set("use_regex", queueList.regex); }
  let page;
  try {
    page = await api("GET", "/queues?" + q);
  } catch (e) {
    $("#queue-table", root).innerHTML = `<p class="error">${esc(e.message)}</p>`;
    return;
  }
  const cols = [
    { title: "Vhost", sort: "vhost", cell: (r) => esc(r.vhost) },
    { title: "Name", sort: "name", cell: (r) => `<a href="#/queue/${enc(r.vhost)}/${enc(r.name)}" data-testid="queue-link">${esc(r.name)}</a>` },
    { title: "Type", sort: "type", cell: (r) => esc(r.type) },
    { title: "Node", sort: "node", cell: (r) => esc(r.node) },
    { title: "State", cell: (r) => `<span class="pill ${esc(r.state)}">${esc(r.state)}</span>` },
    { title: "Ready", sort: "messages_ready", num: true, cell: (r) => fmt(r.messages_ready) },
    { title: "Unacked", sort: "messages_unacknowledged", num: true, cell: (r) => fmt(r.messages_unacknowledged) },
    { title: "Total", sort: "messages", num: true, cell: (r) => fmt(r.messages) },
    { title: "Consumers", sort: "consumers", num: true, cell: (r) => fmt(r.consumers) },
    { title: "Bytes", sort: "message_bytes", num: true, cell: (r) => bytes(r.message_bytes) },
  ];
  $("#queue-table", root).innerHTML =
    table(cols, page.items, { sort: queueList.sort, reverse: queueList.reverse, testid: "queues", empty: "No queues match." }) +
    `<div class="pager"><button class="secondary" id="prev" ${page.page <= 1 ? "disabled" : ""}>Previous</button>
     <span data-testid="queue-count">Page ${page.page} of ${page.page_count} · ${fmt(page.filtered_count)} of ${fmt(page.total_count)} queues</span>
     <button class="secondary" id="next" ${page.page >= page.page_count ? "disabled" : ""}>Next</button></div>`;
  root.querySelectorAll("th[data-sort]").forEach((th) => th.addEventListener("click", () => {
    const s = th.dataset.sort;
    queueList.reverse = queueList.sort === s ? !queueList.reverse : false;
    queueList.sort = s;
    queues.live(root);
  }));
  $("#prev", root).addEventListener("click", () => { queueList.page--; queues.live(root); });
  $("#next", root).addEventListener("click", () => { queueList.page++; queues.live(root); });
};

async function queue(root, [vhost, name]) {
  const path = `/queues/${enc(vhost)}/${enc(name)}`;
  root.innerHTML = `
    <h2>Queue <span data-testid="queue-name">${esc(name)}</span> <span class="muted">in ${esc(vhost)}</span></h2>
    <div class="card" id="queue-props"></div>
    <div class="card"><h3>Bindings</h3><div id="queue-bindings"></div>
      <form class="inline" id="bind-queue"><label>From exchange <input name="source" required></label>
        <label>Routing key <input name="routing_key"></label><button type="submit">Bind</button></form></div>
    <div class="card"><h3>Publish a message</h3>
      <form class="inline" id="publish" data-testid="publish">
        <label>Payload <textarea name="payload" data-testid="publish-payload"></textarea></label>
        <label>Delivery mode <select name="delivery_mode"><option value="2">persistent</option><option value="1">transient</option></select></label>
        <label>Headers (JSON) <input name="headers" placeholder='{"h": "v"}'></label>
        <button type="submit" data-testid="publish-submit">Publish</button>
      </form></div>
    <div class="card"><h3>Get messages</h3>
      <form class="inline" id="get" data-testid="get">
        <label>Count <input name="count" type="number" value="1" min="1" data-testid="get-count"></label>
        <label>Ack mode <select name="ackmode" data-testid="get-ackmode">
          <option value="ack_requeue_true">Nack, requeue</option>
          <option value="ack_requeue_false">Ack, remove</option>
          <option value="reject_requeue_false">Reject, no requeue</option></select></label>
        <button type="submit" data-testid="get-submit">Get</button>
      </form>
      <div id="got" data-testid="got"></div></div>
    <div class="card"><h3>Purge and delete</h3>
      <button class="secondary" id="purge" data-testid="purge">Purge messages</button>
      <button class="danger" id="delete" data-testid="delete-queue">Delete queue</button></div>`;
  $("#publish", root).addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = formData(ev.target);
    act("Message published", async () => {
      const properties = { delivery_mode: Number(f.delivery_mode) };
      const headers = parseJsonField(f.headers, "headers");
      if (Object.keys(headers).length) properties.headers = headers;
      const r = await api("POST", `/exchanges/${enc(vhost)}/amq.default/publish`,
        { routing_key: name, payload: f.payload, payload_encoding: "string", properties });
      if (!r.routed) throw new Error("The message was not routed to any queue");
    });
  });
  $("#get", root).addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = formData(ev.target);
    try {
      const got = await api("POST", `${path}/get`, { count: Number(f.count), ackmode: f.ackmode, encoding: "auto", truncate: 50000 });
      $("#got", root).innerHTML = got.length ? got.map((m, i) => `<h3>Message ${i + 1}</h3>${props({
        exchange: m.exchange || "(default)", routing_key: m.routing_key, redelivered: m.redelivered,
        properties: m.properties, payload_bytes: m.payload_bytes, payload: m.payload, payload_encoding: m.payload_encoding,
        "messages left": m.message_count })}`).join("") : `<p class="muted" data-testid="queue-empty">Queue is empty.</p>`;
      queue.live(root, [vhost, name]);
    } catch (e) { toast(e.message, true); }
  });
  $("#bind-queue", root).addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = formData(ev.target);
    act("Binding added", () => api("POST", `/bindings/${enc(vhost)}/e/${enc(f.source)}/q/${enc(name)}`, { routing_key: f.routing_key, arguments: {} }));
  });
  $("#purge", root).addEventListener("click", () => act("Queue purged", () => api("DELETE", `${path}/contents`)));
  $("#delete", root).addEventListener("click", async () => {
    if (!confirm(`Delete queue '${name}' and its messages?`)) return;
    try {
      await api("DELETE", path);
      toast(`Queue '${name}' deleted`);
      location.hash = "#/queues";
    } catch (e) { toast(e.message, true); }
  });
  await queue.live(root, [vhost, name]);
}
queue.live = async (root, [vhost, name]) => {
  const path = `/queues/${enc(vhost)}/${enc(name)}`;
  const [q, bindings] = await Promise.all([api("GET", path), api("GET", `${path}/bindings`)]);
  $("#queue-props", root).innerHTML = props({
    type: q.type, node: q.node, state: q.state, durable: q.durable, auto_delete: q.auto_delete,
    exclusive: q.exclusive, arguments: q.arguments, messages: q.messages, ready: q.messages_ready,
    unacked: q.messages_unacknowledged, consumers: q.consumers, "message bytes": bytes(q.message_bytes),
    restarts: q.restarts, ...(q.members ? { members: q.members, leader: q.leader } : {}),
  });
  $("#queue-props", root).dataset.testid = "queue-props";
  $("#queue-props", root).setAttribute("data-messages", q.messages);
  $("#queue-bindings", root).innerHTML = table([
    { title: "From", cell: (b) => esc(b.source || "(default exchange)") },
    { title: "Routing key", cell: (b) => esc(b.routing_key) },
    { title: "Arguments", cell: (b) => esc(JSON.stringify(b.arguments)) },
    { title: "", cell: (b) => b.source ? `<button class="secondary" data-unbind="${esc(b.source)}" data-key="${esc(b.properties_key)}">Unbind</button>` : "" },
  ], bindings, { testid: "queue-bindings" });
  root.querySelectorAll("[data-unbind]").forEach((btn) => btn.addEventListener("click", () =>
    act("Binding removed", () => api("DELETE", `/bindings/${enc(vhost)}/e/${enc(btn.dataset.unbind)}/q/${enc(name)}/${enc(btn.dataset.key)}`))));
};

// ----- exchanges ---------------------------------------------------------------

async function exchanges(root) {
  const [vhosts, list] = await Promise.all([api("GET", "/vhosts"), api("GET", "/exchanges")]);
  const types = (overviewInfo && overviewInfo.exchange_types.map((t) => t.name)) || ["direct", "fanout", "topic", "headers"];
  root.innerHTML = `<h2>Exchanges</h2>` + table([
    { title: "Vhost", cell: (x) => esc(x.vhost) },
    { title: "Name", cell: (x) => `<a href="#/exchange/${enc(x.vhost)}/${enc(x.name || "amq.default")}" data-testid="exchange-link">${esc(x.name || "(AMQP default)")}</a>` },
    { title: "Type", cell: (x) => esc(x.type) },
    { title: "Durable", cell: (x) => (x.durable ? "yes" : "no") },
    { title: "Internal", cell: (x) => (x.internal ? "yes" : "no") },
    { title: "Arguments", cell: (x) => esc(JSON.stringify(x.arguments)) },
  ], list, { testid: "exchanges" }) + `
    <div class="card"><h3>Add an exchange</h3>
      <form class="inline" id="add-exchange" data-testid="add-exchange">
        <label>Vhost <select name="vhost">${vhostOptions(vhosts, "/")}</select></label>
        <label>Name <input name="name" required data-testid="add-exchange-name"></label>
        <label>Type <select name="type" data-testid="add-exchange-type">${types.map((t) => `<option>${esc(t)}</option>`).join("")}</select></label>
        <label>Durable <select name="durable"><option value="true">yes</option><option value="false">no</option></select></label>
        <button type="submit" data-testid="add-exchange-submit">Add exchange</button>
      </form></div>`;
  $("#add-exchange", root).addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = formData(ev.target);
    act(`Exchange '${f.name}' added`, () => api("PUT", `/exchanges/${enc(f.vhost)}/${enc(f.name)}`,
      { type: f.type, durable: f.durable === "true", auto_delete: false, internal: false, arguments: {} }));
  });
}
exchanges.live = async (root) => { if (!root.querySelector("input:focus, select:focus")) await exchanges(root); };

async function exchange(root, [vhost, name]) {
  const path = `/exchanges/${enc(vhost)}/${enc(name)}`;
  const [x, out] = await Promise.all([api("GET", path), api("GET", `${path}/bindings/source`)]);
  const builtin = !x.name || x.name.startsWith("amq.");
  root.innerHTML = `
    <h2>Exchange <span data-testid="exchange-name">${esc(x.name || "(AMQP default)")}</span> <span class="muted">in ${esc(vhost)}</span></h2>
    <div class="card">${props({ type: x.type, durable: x.durable, auto_delete: x.auto_delete, internal: x.internal, arguments: x.arguments })}</div>
    <div class="card"><h3>Bindings from this exchange</h3>${table([
      { title: "To", cell: (b) => `${esc(b.destination_type)} <a href="#/${b.destination_type}/${enc(vhost)}/${enc(b.destination)}">${esc(b.destination)}</a>` },
      { title: "Routing key", cell: (b) => esc(b.routing_key) },
      { title: "Arguments", cell: (b) => esc(JSON.stringify(b.arguments)) },
      { title: "", cell: (b) => x.name ? `<button class="secondary" data-unbind="${esc(b.destination)}" data-kind="${b.destination_type === "queue" ? "q" : "e"}" data-key="${esc(b.properties_key)}">Unbind</button>` : "" },
    ], out, { testid: "exchange-bindings" })}
    ${x.name ? `<form class="inline" id="bind" data-testid="bind">
      <label>To <select name="kind"><option value="q">queue</option><option value="e">exchange</option></select></label>
      <label>Name <input name="destination" required data-testid="bind-destination"></label>
      <label>Routing key <input name="routing_key" data-testid="bind-key"></label>
      <button type="submit" data-testid="bind-submit">Bind</button></form>` : ""}</div>
    <div class="card"><h3>Publish a message</h3>
      <form class="inline" id="publish-x"><label>Routing key <input name="routing_key"></label>
        <label>Payload <textarea name="payload"></textarea></label><button type="submit">Publish</button></form></div>
    ${builtin ? "" : `<div class="card"><button class="danger" id="delete-x" data-testid="delete-exchange">Delete exchange</button></div>`}`;
  root.querySelectorAll("[data-unbind]").forEach((btn) => btn.addEventListener("click", () =>
    act("Binding removed", () => api("DELETE", `/bindings/${enc(vhost)}/e/${enc(x.name)}/${btn.dataset.kind}/${enc(btn.dataset.unbind)}/${enc(btn.dataset.key)}`))));
  const bind = $("#bind", root);
  if (bind) bind.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = formData(ev.target);
    act("Binding added", () => api("POST", `/bindings/${enc(vhost)}/e/${enc(x.name)}/${f.kind}/${enc(f.destination)}`, { routing_key: f.routing_key, arguments: {} }));
  });
  $("#publish-x", root).addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = formData(ev.target);
    act("Message published", async () => {
      const r = await api("POST", `${path}/publish`, { routing_key: f.routing_key, payload: f.payload, payload_encoding: "string", properties: {} });
      if (!r.routed) throw new Error("The message was not routed to any queue");
    });
  });
  const del = $("#delete-x", root);
  if (del) del.addEventListener("click", async () => {
    if (!confirm(`Delete exchange '${x.name}'?`)) return;
    try { await api("DELETE", path); toast(`Exchange '${x.name}' deleted`); location.hash = "#/exchanges"; } catch (e) { toast(e.message, true); }
  });
}

// ----- connections and channels -------------------------------------------------

async function connections(root) {
  const list = await api("GET", "/connections");
  root.innerHTML = `<h2>Connections</h2>` + table([
    { title: "Name", cell: (c) => esc(c.name) },
    { title: "Client", cell: (c) => esc(c.user_provided_name || (c.client_properties && c.client_properties.product) || "") },
    { title: "User", cell: (c) => esc(c.user) },
    { title: "Vhost", cell: (c) => esc(c.vhost) },
    { title: "State", cell: (c) => `<span class="pill ${esc(c.state)}">${esc(c.state)}</span>` },
    { title: "TLS", cell: (c) => (c.ssl ? "yes" : "no") },
    { title: "Channels", num: true, cell: (c) => fmt(c.channels) },
    { title: "Received", num: true, cell: (c) => bytes(c.recv_oct) },
    { title: "Sent", num: true, cell: (c) => bytes(c.send_oct) },
    { title: "", cell: (c) => `<button class="danger" data-close="${esc(c.name)}" data-testid="close-connection">Close</button>` },
  ], list, { testid: "connections", empty: "No connections." });
  root.querySelectorAll("[data-close]").forEach((b) => b.addEventListener("click", () =>
    act("Connection closed", () => api("DELETE", `/connections/${enc(b.dataset.close)}`, undefined, { "X-Reason": "Closed via the Warren management UI" }))));
}
connections.live = connections;

async function channels(root) {
  const list = await api("GET", "/channels");
  root.innerHTML = `<h2>Channels</h2>` + table([
    { title: "Channel", cell: (c) => esc(c.name) },
    { title: "User", cell: (c) => esc(c.user) },
    { title: "Mode", cell: (c) => [c.confirm ? "confirm" : "", c.transactional ? "tx" : ""].filter(Boolean).join(", ") },
    { title: "Prefetch", num: true, cell: (c) => fmt(c.prefetch_count) },
    { title: "Consumers", num: true, cell: (c) => fmt(c.consumer_count) },
    { title: "Unacked", num: true, cell: (c) => fmt(c.messages_unacknowledged) },
    { title: "Published", num: true, cell: (c) => fmt(c.message_stats.publish) },
    { title: "Delivered", num: true, cell: (c) => fmt(c.message_stats.deliver_get) },
    { title: "Acked", num: true, cell: (c) => fmt(c.message_stats.ack) },
  ], list, { testid: "channels", empty: "No channels." });
}
channels.live = channels;

// ----- cluster and the supervision tree ----------------------------------------

async function cluster(root) {
  const [c, nodes] = await Promise.all([api("GET", "/warren/cluster"), api("GET", "/nodes").catch(() => [])]);
  const detail = Object.fromEntries(nodes.map((n) => [n.name, n]));
  root.innerHTML = `<h2>Cluster</h2><p class="muted">Metadata leader: <b data-testid="leader">${esc(c.leader || "none")}</b> · term ${esc(c.term)}</p>` + table([
    { title: "Node", cell: (m) => `${esc(m.name)}${m.name === c.this_node ? ' <span class="muted">(this node)</span>' : ""}` },
    { title: "Role", cell: (m) => esc(m.role) },
    { title: "Health", cell: (m) => `<span class="pill ${esc(m.health)}">${esc(m.health)}</span>` },
    { title: "Leader", cell: (m) => (m.leader ? "yes" : "") },
    { title: "Uptime", cell: (m) => (m.uptime_ms ? duration(m.uptime_ms) : "") },
    { title: "Memory", cell: (m) => (detail[m.name] && detail[m.name].mem_used ? `${bytes(detail[m.name].mem_used)} of ${bytes(detail[m.name].mem_limit)}` : "") },
    { title: "Address", cell: (m) => esc(m.address) },
    { title: "", cell: (m) => `<a href="#/tree/${enc(m.name)}">supervision tree</a>` },
  ], c.members, { testid: "members" });
}
cluster.live = cluster;

function treeNode(t) {
  const meta = [t.kind, t.strategy, t.status, t.restarts ? `${t.restarts} restarts` : "", t.uptime_ms ? `up ${duration(t.uptime_ms)}` : ""]
    .filter(Boolean).join(" · ");
  const kids = t.children && t.children.length ? `<ul class="tree">${t.children.map(treeNode).join("")}</ul>` : "";
  return `<li><span class="name" data-testid="tree-node">${esc(t.name)}</span><span class="meta">${esc(meta)}</span>${kids}</li>`;
}

async function tree(root, [node]) {
  const c = await api("GET", "/warren/cluster");
  const chosen = node || c.this_node;
  root.innerHTML = `<h2>Supervision tree</h2>
    <div class="toolbar"><label>Node <select id="tree-node" data-testid="tree-select">${c.members.map((m) =>
      `<option ${m.name === chosen ? "selected" : ""}>${esc(m.name)}</option>`).join("")}</select></label>
      <span class="muted">live, every ${LIVE_MS / 1000} s</span></div>
    <div class="card" id="tree-view"></div>`;
  $("#tree-node", root).addEventListener("change", (ev) => { location.hash = `#/tree/${enc(ev.target.value)}`; });
  await tree.live(root, [chosen]);
}
tree.every = LIVE_MS;
tree.live = async (root, [node]) => {
  const chosen = node || (await api("GET", "/warren/cluster")).this_node;
  const t = await api("GET", `/warren/tree?node=${enc(chosen)}`);
  $("#tree-view", root).innerHTML = `<ul class="tree root" data-testid="tree">${treeNode(t.tree)}</ul>`;
};

// ----- start -------------------------------------------------------------------

if (auth) {
  api("GET", "/whoami").then(start).catch((e) => showLogin(e.status === 401 ? "" : e.message));
} else {
  showLogin("");
}
