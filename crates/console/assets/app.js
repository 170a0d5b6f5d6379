// weir console: pages over /console/api (hash routes: #/, #/topics, #/groups, #/dead-letters; the systems' views
// are in systems.js), live numbers from
// /console/api/live (Server-Sent Events, one snapshot a second). No dependencies: it ships inside the weir binary.
"use strict";

const number = new Intl.NumberFormat();
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${decimal.format(n)} ${units[i]}`;
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  return d > 0 ? `${d} d ${h} h` : h > 0 ? `${h} h ${m} min` : m > 0 ? `${m} min ${s} s` : `${s} s`;
}

// Every request the console makes says so: the server then answers 401 without the browser's own login dialog, and
// lets a request made with the session cookie change something (another site's page cannot send this header).
function consoleFetch(path, options = {}) {
  return fetch(path, { ...options, headers: { ...(options.headers || {}), "x-weir-console": "1" } });
}

async function api(path) {
  const response = await consoleFetch(path, { headers: { accept: "application/json" } });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      message = (await response.json()).message || message;
    } catch (_) { /* not JSON: keep the status */ }
    throw new Error(`${path}: ${message}`);
  }
  return response.json();
}

// The live feed: one EventSource for the whole page; the current view listens while it is shown.
const live = { samples: [], latest: null, listener: null, connected: false };

function startLive() {
  const source = new EventSource("/console/api/live");
  source.addEventListener("totals", (event) => {
    const data = JSON.parse(event.data);
    live.connected = true;
    live.latest = data;
    live.samples.push({ at: Date.now(), in: data.in_per_s, out: data.out_per_s });
    if (live.samples.length > 300) live.samples.shift();
    if (live.listener) live.listener(data);
  });
  // EventSource reconnects by itself; the view shows the feed as stale meanwhile.
  source.onerror = () => {
    live.connected = false;
    if (live.listener && live.latest) live.listener(live.latest);
  };
}

// Themes: the system's, or the one chosen (kept in this browser).
function applyTheme() {
  const chosen = localStorage.getItem("weir-theme");
  if (chosen) document.documentElement.dataset.theme = chosen;
  else delete document.documentElement.dataset.theme;
  document.getElementById("theme").textContent = `Theme: ${chosen || "system"}`;
}

function cycleTheme() {
  const order = [null, "light", "dark"];
  const next = order[(order.indexOf(localStorage.getItem("weir-theme")) + 1) % order.length];
  if (next) localStorage.setItem("weir-theme", next);
  else localStorage.removeItem("weir-theme");
  applyTheme();
}

function card(label, id, value = "…") {
  return `<div class="card"><div class="label">${esc(label)}</div><div class="value" id="${id}" data-value="">${esc(value)}</div></div>`;
}

function setCard(id, value, text) {
  const el = document.getElementById(id);
  if (!el) return;
  el.dataset.value = String(value);
  el.textContent = text;
}

// A line chart of records in and out per second over the samples kept (the last five minutes).
function chart(samples) {
  const width = 600, height = 160;
  const max = Math.max(1, ...samples.map((s) => Math.max(s.in, s.out)));
  const line = (key) => samples
    .map((s, i) => `${(i / Math.max(1, samples.length - 1)) * width},${height - (s[key] / max) * (height - 10)}`)
    .join(" ");
  return `<svg viewBox="0 0 ${width} ${height}" preserveAspectRatio="none" role="img"
      aria-label="Records in and out per second, the last ${samples.length} seconds, at most ${decimal.format(max)} a second">
    <polyline fill="none" stroke="var(--in)" stroke-width="2" points="${line("in")}"/>
    <polyline fill="none" stroke="var(--out)" stroke-width="2" points="${line("out")}"/>
  </svg>`;
}

async function overview(view) {
  view.innerHTML = `<section data-testid="overview"><h1>Overview</h1>
    <div class="cards">
      ${card("Records in / s", "in-rate")}${card("Records out / s", "out-rate")}
      ${card("Topics", "topics")}${card("Partitions", "partitions")}${card("Records stored", "records")}
      ${card("Storage", "storage")}${card("Consumer groups", "groups")}${card("Total lag", "lag")}
    </div>
    <div class="chart"><div class="legend"><span class="in">in</span><span class="out">out (committed)</span>
      <span id="feed" class="muted"></span></div><div id="chart"></div></div>
    <div class="cards">${card("Systems", "systems")}${card("Bus", "bus")}${card("Version", "version")}${card("Up for", "uptime")}</div>
    <p class="muted" id="data-dir"></p></section>`;
  const info = await api("/console/api/overview");
  // Each system with its health: a cross and the tasks that stopped when one did.
  const health = info.health || [];
  setCard("systems", info.systems.length, info.systems.length ? "" : "none");
  document.getElementById("systems").innerHTML = health.map((h) => `<span class="system ${h.healthy ? "ok" : "error"}"
    data-system="${esc(h.system)}" data-healthy="${h.healthy}" title="${h.healthy ? `${h.tasks} task(s) running` : `stopped: ${esc(h.stopped.join(", "))}`}">
    ${h.healthy ? "✓" : "✗"} ${esc(h.system)}</span>`).join(" ") || "none";
  setCard("bus", info.bus, info.bus);
  setCard("version", info.version, info.version);
  document.getElementById("data-dir").textContent = info.data_dir ? `Data directory: ${info.data_dir}` : "";
  const show = (d) => {
    const t = d.totals;
    setCard("in-rate", d.in_per_s, decimal.format(d.in_per_s));
    setCard("out-rate", d.out_per_s, decimal.format(d.out_per_s));
    setCard("topics", t.topics, number.format(t.topics));
    setCard("partitions", t.partitions, number.format(t.partitions));
    setCard("records", t.records, number.format(t.records));
    setCard("storage", t.size_bytes, bytes(t.size_bytes));
    setCard("groups", t.groups, number.format(t.groups));
    setCard("lag", t.total_lag, number.format(t.total_lag));
    setCard("uptime", d.uptime_seconds, duration(d.uptime_seconds));
    document.getElementById("chart").innerHTML = chart(live.samples);
    document.getElementById("feed").textContent = live.connected
      ? `live, updated ${new Date().toLocaleTimeString()}` : "reconnecting…";
  };
  show(live.latest || { totals: info.totals, in_per_s: 0, out_per_s: 0, uptime_seconds: info.uptime_seconds });
  live.listener = show;
}

// A paged, filtered list (topics or groups): the rows come from the server a page at a time.
async function list(view, { title, path, testid, columns, row, extra = "", wire = () => {} }) {
  const state = { q: "", offset: 0, limit: 50 };
  view.innerHTML = `<section><h1>${esc(title)}</h1>
    <div class="toolbar"><label for="filter">Filter by name</label><input id="filter" type="search" autocomplete="off">
      <button type="button" id="prev">Previous</button><button type="button" id="next">Next</button>
      <span id="range" class="muted"></span></div>
    <table data-testid="${testid}"><thead><tr>${columns.map((c) => `<th scope="col" class="${c.num ? "num" : ""}">${esc(c.label)}</th>`).join("")}</tr></thead>
    <tbody></tbody></table>${extra}</section>`;
  const load = async () => {
    const page = await api(`${path}?q=${encodeURIComponent(state.q)}&offset=${state.offset}&limit=${state.limit}`);
    view.querySelector("tbody").innerHTML = page.items.length
      ? page.items.map(row).join("")
      : `<tr><td colspan="${columns.length}" class="muted">None${state.q ? " matching" : ""}.</td></tr>`;
    const last = Math.min(page.total, state.offset + page.items.length);
    view.querySelector("#range").textContent = page.total ? `${state.offset + 1}–${last} of ${number.format(page.total)}` : "";
    view.querySelector("#prev").disabled = state.offset === 0;
    view.querySelector("#next").disabled = last >= page.total;
  };
  let typing;
  view.querySelector("#filter").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = e.target.value; state.offset = 0; load().catch(fail); }, 200);
  });
  view.querySelector("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); load().catch(fail); });
  view.querySelector("#next").addEventListener("click", () => { state.offset += state.limit; load().catch(fail); });
  wire(view, load);
  await load();
  // Refreshed with the live feed, at most every five seconds.
  let refreshed = Date.now();
  live.listener = () => {
    if (Date.now() - refreshed >= 5000) { refreshed = Date.now(); load().catch(fail); }
  };
}

function topics(view) {
  return list(view, {
    title: "Topics", path: "/console/api/topics", testid: "topics-table",
    columns: [{ label: "Name" }, { label: "Partitions", num: true }, { label: "Records", num: true },
      { label: "Size", num: true }, { label: "End offsets", num: true }, { label: "Records / s", num: true }],
    row: (t) => `<tr><td><a href="#/topics/${encodeURIComponent(t.name)}">${esc(t.name)}</a>${t.offline ? ` <span class="error">(${t.offline} offline)</span>` : ""}</td>
      <td class="num">${number.format(t.partitions)}</td><td class="num">${number.format(t.records)}</td>
      <td class="num">${bytes(t.size_bytes)}</td><td class="num">${number.format(t.end_offset)}</td>
      <td class="num">${t.records_per_s === null ? "–" : decimal.format(t.records_per_s)}</td></tr>`,
    extra: `<form id="create" data-testid="create" data-needs-write="console"><h2>Create a topic</h2>
      <label>Name <input name="name" required autocomplete="off" pattern="[A-Za-z0-9._\\-]+"></label>
      <label>Partitions <input name="partitions" type="number" min="1" max="10000" value="1" required></label>
      <label>Settings, one <code>key=value</code> a line <textarea name="configs" rows="2" placeholder="retention.ms=604800000"></textarea></label>
      <button type="submit">Create</button> <span id="created" role="status"></span></form>`,
    wire: (view, load) => view.querySelector("#create").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = new FormData(e.target);
      const configs = Object.fromEntries(String(f.get("configs")).split("\n").map((l) => l.trim()).filter(Boolean)
        .map((l) => [l.slice(0, l.indexOf("=") < 0 ? l.length : l.indexOf("=")).trim(), l.includes("=") ? l.slice(l.indexOf("=") + 1).trim() : ""]));
      const status = view.querySelector("#created");
      try {
        const response = await consoleFetch("/console/api/topics", { method: "POST", headers: { "content-type": "application/json" },
          body: JSON.stringify({ name: f.get("name"), partitions: Number(f.get("partitions")), configs }) });
        const answer = await response.json();
        if (!response.ok) throw new Error(answer.message || `HTTP ${response.status}`);
        status.textContent = `Created ${answer.name} with ${answer.partitions} partition(s).`;
        await load();
      } catch (error) {
        status.textContent = `Not created: ${error.message}`;
      }
    }),
  });
}

function groups(view) {
  return list(view, {
    title: "Consumer groups", path: "/console/api/groups", testid: "groups-table",
    columns: [{ label: "Group" }, { label: "State" }, { label: "Members", num: true }, { label: "Topics" }, { label: "Lag", num: true }],
    row: (g) => `<tr><td><a href="#/groups/${encodeURIComponent(g.group)}">${esc(g.group)}</a></td><td class="state-${esc(g.state)}">${esc(g.state)}</td>
      <td class="num">${number.format(g.members)}</td><td>${esc(g.topics.join(", "))}</td>
      <td class="num ${g.lag > 1000 ? "lag-high" : ""}">${number.format(g.lag)}</td></tr>`,
  });
}

// One message as the page shows it: where and when, key, headers, the value as pretty JSON (or text, or hex).
function message(m) {
  const when = new Date(m.timestamp).toLocaleString();
  const decoded = m.value_schema && m.value_schema.id !== undefined;
  const value = decoded ? JSON.stringify(m.value_decoded, null, 2)
    : m.value_json !== null ? JSON.stringify(m.value_json, null, 2) : m.value === null ? "(null)" : m.value;
  const schemaNote = decoded ? `<div class="muted" data-schema-id="${m.value_schema.id}">decoded with schema id ${m.value_schema.id} (${esc(m.value_schema.type)})</div>`
    : m.value_schema ? `<div class="error">framed with a schema id, but does not decode: ${esc(m.value_schema.error)}</div>` : "";
  const headers = m.headers.length
    ? `<div class="muted">headers: ${m.headers.map((h) => `${esc(h.key)}=${esc(h.value)}`).join(", ")}</div>` : "";
  return `<article class="message" data-offset="${m.offset}" data-partition="${m.partition}">
    <div class="meta"><span>partition ${m.partition} · offset ${number.format(m.offset)}</span><time datetime="${new Date(m.timestamp).toISOString()}">${esc(when)}</time>
      <span>key: ${m.key === null ? "<span class=\"muted\">(none)</span>" : esc(m.key)}${m.key_encoding === "hex" ? " (hex)" : ""}</span>
      <button type="button" class="copy">Copy as JSON</button></div>
    ${headers}${schemaNote}<pre>${esc(value)}</pre>${m.value_encoding === "hex" && !decoded ? `<div class="muted">value shown as hex</div>` : ""}</article>`;
}

function wireCopy(container, messages) {
  container.querySelectorAll("button.copy").forEach((button, i) => button.addEventListener("click", async () => {
    const text = JSON.stringify(messages[i], null, 2);
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (_) {
      button.textContent = "Copy failed: select the text";
    }
  }));
}

async function topic(view, name) {
  const t = await api(`/console/api/topics/${encodeURIComponent(name)}`);
  view.innerHTML = `<section data-testid="topic"><p><a href="#/topics">Topics</a> /</p><h1>${esc(t.name)}</h1>
    <div class="columns">
      <div><h2>Partitions</h2><table data-testid="partitions"><thead><tr><th scope="col">Partition</th><th scope="col" class="num">Start</th>
        <th scope="col" class="num">End</th><th scope="col" class="num">Size</th></tr></thead><tbody>
        ${t.partitions.map((p) => `<tr><td>${p.partition}${p.offline ? ` <span class="error">offline</span>` : ""}</td>
          <td class="num">${number.format(p.start_offset)}</td><td class="num">${number.format(p.end_offset)}</td>
          <td class="num">${bytes(p.size_bytes)}</td></tr>`).join("")}</tbody></table>
        <h2>Consumers</h2>${t.consumers.length ? `<table><thead><tr><th scope="col">Group</th><th scope="col">State</th>
          <th scope="col" class="num">Lag</th></tr></thead><tbody>${t.consumers.map((g) => `<tr><td>${esc(g.group)}</td>
          <td class="state-${esc(g.state)}">${esc(g.state)}</td><td class="num">${number.format(g.lag)}</td></tr>`).join("")}
          </tbody></table>` : `<p class="muted">No group has committed offsets here.</p>`}</div>
      <details><summary>Settings (${Object.keys(t.configs).length})</summary><table><tbody>
        ${Object.entries(t.configs).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join("")}</tbody></table></details>
    </div>
    <form id="delete" data-testid="delete" data-needs-write="console"><h2>Delete</h2><p class="muted">Deletes the topic, its messages and its
      groups' offsets. Type its name to confirm.</p><label>Name <input name="confirm" autocomplete="off"></label>
      <button type="submit" disabled>Delete this topic</button> <span id="deleted" role="status"></span></form>
    <h2>Messages</h2>
    <form id="browse" class="toolbar wrap">
      <label>Partition <select name="partition"><option value="">all</option>
        ${t.partitions.map((p) => `<option value="${p.partition}">${p.partition}</option>`).join("")}</select></label>
      <label>From <select name="from"><option value="latest">latest</option><option value="earliest">earliest</option>
        <option value="offset">offset</option><option value="timestamp">time</option></select></label>
      <label>Offset <input name="offset" type="number" min="0" value="0" size="8"></label>
      <label>Time <input name="time" type="datetime-local"></label>
      <label>Order <select name="order"><option value="newest">newest first</option><option value="oldest">oldest first</option></select></label>
      <label>Show <input name="limit" type="number" min="1" max="500" value="20" size="4"></label>
      <button type="submit">Show messages</button></form>
    <div id="messages" data-testid="messages"></div>
    <div class="columns">
      <form id="produce" data-testid="produce" data-needs-write="console"><h2>Produce a message</h2>
        <label>Key <input name="key" autocomplete="off"></label>
        <label>Headers, one <code>name: value</code> a line <textarea name="headers" rows="2"></textarea></label>
        <label>Value <textarea name="value" rows="5" spellcheck="false"></textarea></label>
        <label>Value schema <select name="value_subject"><option value="">none: the text as it is</option></select></label>
        <button type="submit">Produce</button> <span id="produced" role="status"></span></form>
      <form id="search" data-testid="search"><h2>Search</h2>
        <label>Text <input name="q" required autocomplete="off"></label>
        <label>In <select name="in"><option value="value">value</option><option value="key">key</option><option value="header">headers</option></select></label>
        <label>JSON path (values) <input name="path" placeholder="$.order.id" autocomplete="off"></label>
        <label>Records to scan at most <input name="max" type="number" min="1" max="1000000" value="10000"></label>
        <button type="submit">Search</button>
        <div><progress id="search-progress" max="1" value="0" aria-label="Records scanned"></progress> <span id="search-status" role="status"></span></div>
        <div id="found" data-testid="found"></div></form>
    </div></section>`;
  const base = `/console/api/topics/${encodeURIComponent(name)}`;
  const removal = view.querySelector("#delete");
  const confirmation = removal.querySelector("input[name=confirm]");
  confirmation.addEventListener("input", () => { removal.querySelector("button").disabled = confirmation.value !== name; });
  removal.addEventListener("submit", async (e) => {
    e.preventDefault();
    const status = view.querySelector("#deleted");
    try {
      const response = await consoleFetch(base, { method: "DELETE" });
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.message || `HTTP ${response.status}`);
      location.hash = "#/topics";
    } catch (error) {
      status.textContent = `Not deleted: ${error.message}`;
    }
  });
  const browse = view.querySelector("#browse");
  const show = async () => {
    const f = new FormData(browse);
    const params = new URLSearchParams({ from: f.get("from"), order: f.get("order"), limit: f.get("limit") });
    if (f.get("partition") !== "") params.set("partition", f.get("partition"));
    if (f.get("from") === "offset") params.set("offset", f.get("offset"));
    if (f.get("from") === "timestamp") params.set("timestamp", String(new Date(f.get("time")).getTime()));
    const page = await api(`${base}/messages?${params}`);
    const list = view.querySelector("#messages");
    list.innerHTML = page.records.length ? page.records.map(message).join("") : `<p class="muted">No messages.</p>`;
    wireCopy(list, page.records);
  };
  browse.addEventListener("submit", (e) => { e.preventDefault(); show().catch(fail); });
  view.querySelector("#produce").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const headers = String(f.get("headers")).split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
      const at = l.indexOf(":");
      return at < 0 ? { key: l, value: "" } : { key: l.slice(0, at).trim(), value: l.slice(at + 1).trim() };
    });
    const body = { key: f.get("key") || null, value: f.get("value"), headers };
    if (f.get("value_subject")) body.value_subject = f.get("value_subject");
    const status = view.querySelector("#produced");
    try {
      const response = await consoleFetch(`${base}/messages`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.message || `HTTP ${response.status}`);
      status.textContent = `Produced to partition ${answer.partition} at offset ${answer.offset}${answer.schema_id ? ` with schema id ${answer.schema_id}` : ""}.`;
      await show();
    } catch (error) {
      status.textContent = `Not produced: ${error.message}`;
    }
  });
  let searching = null;
  view.querySelector("#search").addEventListener("submit", (e) => {
    e.preventDefault();
    if (searching) searching.close();
    const f = new FormData(e.target);
    const params = new URLSearchParams({ q: f.get("q"), in: f.get("in"), max: f.get("max") });
    if (f.get("path")) params.set("path", f.get("path"));
    const found = view.querySelector("#found"), progress = view.querySelector("#search-progress");
    const status = view.querySelector("#search-status");
    const matches = [];
    found.innerHTML = "";
    status.textContent = "searching…";
    const source = new EventSource(`${base}/search?${params}`);
    searching = source;
    source.addEventListener("match", (event) => {
      const m = JSON.parse(event.data);
      matches.push(m);
      found.insertAdjacentHTML("beforeend", message(m));
      wireCopy(found, matches);
    });
    source.addEventListener("progress", (event) => {
      const p = JSON.parse(event.data);
      progress.max = Math.max(1, p.to_scan);
      progress.value = p.scanned;
      status.textContent = `scanned ${number.format(p.scanned)} of ${number.format(p.to_scan)}, found ${p.found}`;
    });
    source.addEventListener("done", (event) => {
      const p = JSON.parse(event.data);
      status.textContent = `done: scanned ${number.format(p.scanned)}, found ${p.found}`;
      found.dataset.done = "true";
      source.close();
    });
    source.addEventListener("error", (event) => {
      status.textContent = event.data ? `failed: ${JSON.parse(event.data).message}` : "the search stopped";
      source.close();
    });
  });
  // With the registry: a value may be framed with a subject's latest schema (this topic's value subject first).
  if (consoleInfo && consoleInfo.registry) {
    const subjects = await api("/console/api/registry/subjects");
    const select = view.querySelector("#produce select[name=value_subject]");
    const own = `${name}-value`;
    const ordered = subjects.includes(own) ? [own, ...subjects.filter((s) => s !== own)] : subjects;
    select.insertAdjacentHTML("beforeend", ordered.map((s) => `<option value="${esc(s)}">${esc(s)}, latest</option>`).join(""));
  }
  await show();
}

// A group's lag over the samples the server keeps (the last hour): the total, and each partition's (thin lines,
// for the partitions the server keeps apart).
function lagChart(history, partitions = []) {
  const width = 600, height = 140;
  const max = Math.max(1, ...history.map((h) => h.lag));
  const first = history.length ? history[0].at : 0, last = history.length ? history[history.length - 1].at : 1;
  const span = Math.max(1, last - first);
  const at = (t, lag) => `${((t - first) / span) * width},${height - (lag / max) * (height - 10)}`;
  const points = history.map((h) => at(h.at, h.lag)).join(" ");
  const each = partitions.length > 1 ? partitions.map((p, i) => `<polyline fill="none" stroke="${palette[i % palette.length]}"
    stroke-width="1" opacity="0.6" points="${p.samples.map(([t, lag]) => at(t, lag)).join(" ")}"><title>${esc(p.topic)}-${p.partition}</title></polyline>`).join("") : "";
  const from = history.length ? new Date(first).toLocaleTimeString() : "";
  return `<svg viewBox="0 0 ${width} ${height}" preserveAspectRatio="none" role="img"
      aria-label="Lag over time since ${esc(from)}: ${history.length} samples, at most ${number.format(max)}">
    ${each}<polyline fill="none" stroke="var(--warn)" stroke-width="2" points="${points}"/></svg>
    <div class="legend"><span>${history.length} samples${from ? ` since ${esc(from)}` : ""}</span><span>max ${number.format(max)}</span>
    ${partitions.length > 1 ? `<span>total (thick) and ${partitions.length} partitions</span>` : ""}</div>`;
}

async function group(view, name) {
  const base = `/console/api/groups/${encodeURIComponent(name)}`;
  view.innerHTML = `<section data-testid="group"><p><a href="#/groups">Consumer groups</a> /</p><h1>${esc(name)}</h1>
    <div class="cards">${card("State", "g-state")}${card("Members", "g-members")}${card("Lag", "g-lag")}</div>
    <div class="chart"><div class="legend"><span>Lag over the last hour</span></div><div id="lag-chart"></div></div>
    <div class="columns"><div><h2>Offsets</h2><table data-testid="offsets"><thead><tr><th scope="col">Topic</th>
      <th scope="col" class="num">Partition</th><th scope="col" class="num">Committed</th><th scope="col" class="num">End</th>
      <th scope="col" class="num">Lag</th></tr></thead><tbody></tbody></table>
      <h2>Members</h2><table><thead><tr><th scope="col">Member</th><th scope="col">Client</th><th scope="col">Host</th>
      <th scope="col">Partitions</th></tr></thead><tbody id="members"></tbody></table></div>
    <form id="reset" data-testid="reset" data-needs-write="console"><h2>Reset offsets</h2><p class="muted">Only while the group has no members.</p>
      <label>To <select name="to"><option value="earliest">the start</option><option value="latest">the end</option>
        <option value="timestamp">a time</option><option value="offset">an offset</option></select></label>
      <label>Topic <select name="topic"><option value="">all</option></select></label>
      <label>Time <input name="time" type="datetime-local"></label>
      <label>Offset <input name="offset" type="number" min="0" value="0"></label>
      <button type="submit">Reset</button> <span id="reset-status" role="status"></span></form></div></section>`;
  const load = async () => {
    const g = await api(base);
    setCard("g-state", g.state, g.state);
    setCard("g-members", g.members.length, number.format(g.members.length));
    setCard("g-lag", g.lag, number.format(g.lag));
    view.querySelector("#lag-chart").innerHTML = lagChart(g.history, g.partition_history);
    view.querySelector("[data-testid=offsets] tbody").innerHTML = g.offsets.map((o) => `<tr><td>${esc(o.topic)}</td>
      <td class="num">${o.partition}</td><td class="num">${o.committed === null ? "–" : number.format(o.committed)}</td>
      <td class="num">${number.format(o.end_offset)}</td><td class="num">${o.lag === null ? "–" : number.format(o.lag)}</td></tr>`).join("");
    view.querySelector("#members").innerHTML = g.members.length ? g.members.map((m) => `<tr><td>${esc(m.member_id)}</td>
      <td>${esc(m.client_id)}</td><td>${esc(m.host)}</td><td>${esc(m.assignment.join(", "))}</td></tr>`).join("")
      : `<tr><td colspan="4" class="muted">No members.</td></tr>`;
    const select = view.querySelector("#reset select[name=topic]");
    const topicsOf = [...new Set(g.offsets.map((o) => o.topic))];
    if (select.options.length !== topicsOf.length + 1) {
      select.innerHTML = `<option value="">all</option>` + topicsOf.map((t) => `<option>${esc(t)}</option>`).join("");
    }
    view.querySelector("#reset button").disabled = g.members.length > 0;
  };
  view.querySelector("#reset").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { to: f.get("to") };
    if (f.get("topic")) body.topic = f.get("topic");
    if (body.to === "timestamp") body.timestamp = new Date(f.get("time")).getTime();
    if (body.to === "offset") body.offset = Number(f.get("offset"));
    const status = view.querySelector("#reset-status");
    try {
      const response = await consoleFetch(`${base}/reset`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.message || `HTTP ${response.status}`);
      status.textContent = `Reset ${answer.offsets.length} partition(s).`;
      await load();
    } catch (error) {
      status.textContent = `Not reset: ${error.message}`;
    }
  });
  await load();
  let refreshed = Date.now();
  live.listener = () => {
    if (Date.now() - refreshed >= 2000) { refreshed = Date.now(); load().catch(fail); }
  };
}

function deadLetterTopics(view) {
  return list(view, {
    title: "Dead letters", path: "/console/api/dead-letters", testid: "dlq-table",
    columns: [{ label: "Dead-letter topic" }, { label: "From topic" }, { label: "Waiting", num: true },
      { label: "Replayed", num: true }, { label: "Letters", num: true }],
    row: (d) => `<tr><td><a href="#/dead-letters/${encodeURIComponent(d.topic)}">${esc(d.topic)}</a></td>
      <td>${esc(d.origin)}</td><td class="num ${d.waiting > 0 ? "lag-high" : ""}">${number.format(d.waiting)}</td>
      <td class="num">${number.format(d.replayed)}</td><td class="num">${number.format(d.letters)}</td></tr>`,
    extra: `<p class="muted">Records a handler failed for good land in <code>TOPIC.dlq</code>, with the error, the attempts
      and where they came from. Replaying one sends it back there.</p>`,
  });
}

// One dead letter: the failure (error, attempts, origin, first failure), the record, and its own replay button.
function letter(l) {
  const origin = l.origin.topic ? `${esc(l.origin.topic)} / ${l.origin.partition} / ${number.format(l.origin.offset)}` : "unknown";
  const value = l.value_json !== null ? JSON.stringify(l.value_json, null, 2) : l.value === null ? "(null)" : l.value;
  const first = l.first_failure_ms ? new Date(l.first_failure_ms).toLocaleString() : "–";
  return `<article class="message letter" data-partition="${l.partition}" data-offset="${l.offset}" data-replayed="${l.replayed}">
    <div class="meta"><label><input type="checkbox" class="pick" data-needs-write="console" ${l.replayed ? "disabled" : ""}
      aria-label="Choose letter ${l.partition}/${l.offset}"> partition ${l.partition} · offset ${number.format(l.offset)}</label>
      <span>from ${origin}</span><span>attempts ${l.attempts ?? "–"}</span><span>first failed ${esc(first)}</span>
      <span>key: ${l.key === null ? "<span class=\"muted\">(none)</span>" : esc(l.key)}</span>
      ${l.replayed ? `<span class="ok">replayed</span>` : `<button type="button" class="replay-one" data-needs-write="console">Replay</button>`}</div>
    <div class="error">${esc(l.error || "(no error recorded)")}</div><pre>${esc(value)}</pre></article>`;
}

async function deadLetters(view, name) {
  const base = `/console/api/dead-letters/${encodeURIComponent(name)}`;
  view.innerHTML = `<section data-testid="dead-letters"><p><a href="#/dead-letters">Dead letters</a> /</p><h1>${esc(name)}</h1>
    <form id="letters" class="toolbar wrap">
      <label>Error, key or value containing <input name="q" type="search" autocomplete="off"></label>
      <label>Show <select name="state"><option value="waiting">waiting</option><option value="replayed">replayed</option>
        <option value="all">all</option></select></label>
      <button type="submit">Show</button></form>
    <div class="toolbar" data-needs-write="console"><button type="button" id="replay-chosen" disabled>Replay the chosen</button>
      <button type="button" id="replay-all">Replay all waiting</button>
      <span id="replay-status" role="status"></span></div>
    <p class="muted" id="letters-count"></p><div id="letter-list" data-testid="letters"></div></section>`;
  const form = view.querySelector("#letters");
  const status = view.querySelector("#replay-status");
  const chosen = view.querySelector("#replay-chosen");
  const all = view.querySelector("#replay-all");
  const load = async () => {
    const f = new FormData(form);
    const page = await api(`${base}?${new URLSearchParams({ q: f.get("q"), state: f.get("state"), limit: 200 })}`);
    const listEl = view.querySelector("#letter-list");
    listEl.innerHTML = page.letters.length ? page.letters.map(letter).join("") : `<p class="muted">No letters.</p>`;
    view.querySelector("#letters-count").textContent =
      `${number.format(page.matched)} letter(s)${page.matched > page.letters.length ? `, the newest ${page.letters.length} shown` : ""}; ${number.format(page.scanned)} scanned`;
    all.textContent = f.get("q") ? `Replay all waiting matching “${f.get("q")}”` : "Replay all waiting";
    all.disabled = f.get("state") === "replayed" || page.matched === 0;
    chosen.disabled = true;
    listEl.querySelectorAll("input.pick").forEach((box) => box.addEventListener("change", () => {
      chosen.disabled = !listEl.querySelector("input.pick:checked");
    }));
    listEl.querySelectorAll("button.replay-one").forEach((button) => button.addEventListener("click", () => {
      const a = button.closest("article");
      replay({ letters: [{ partition: Number(a.dataset.partition), offset: Number(a.dataset.offset) }] });
    }));
  };
  const replay = async (body) => {
    status.textContent = "replaying…";
    try {
      const response = await consoleFetch(`${base}/replay`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.message || `HTTP ${response.status}`);
      const where = Object.entries(answer.to).map(([t, n]) => `${number.format(n)} to ${t}`).join(", ");
      // The list first, then the status: once it says so, the letters shown are those left.
      await load();
      status.textContent = answer.replayed ? `Replayed ${where}.` : "Nothing to replay: already replayed.";
    } catch (error) {
      status.textContent = `Not replayed: ${error.message}`;
    }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); load().catch(fail); });
  chosen.addEventListener("click", () => replay({ letters: [...view.querySelectorAll("input.pick:checked")]
    .map((box) => box.closest("article")).map((a) => ({ partition: Number(a.dataset.partition), offset: Number(a.dataset.offset) })) }));
  all.addEventListener("click", () => replay({ q: new FormData(form).get("q") }));
  await load();
}

// systems.js defines the systems' pages.
const pages = { "": overview, topics, groups, "dead-letters": deadLetterTopics, systems: (view) => systemsPage(view),
  schemas: (view) => schemasPage(view) };

function fail(error) {
  const view = document.getElementById("main");
  const p = document.createElement("p");
  p.className = "error";
  p.setAttribute("role", "alert");
  p.textContent = `Cannot load this page: ${error.message}`;
  view.prepend(p);
}

async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const name = parts[0];
  const rest = decodeURIComponent(parts.slice(1).join("/"));
  const page = name === "topics" && parts[1] ? (view) => topic(view, rest)
    : name === "groups" && parts[1] ? (view) => group(view, rest)
    : name === "dead-letters" && parts[1] ? (view) => deadLetters(view, rest)
    : name === "schemas" && parts[1] ? (view) => subjectPage(view, rest)
    : name === "systems" && parts[1] ? (view) => systemPage(view, decodeURIComponent(parts[1]), decodeURIComponent(parts.slice(2).join("/")))
    : pages[name] || overview;
  const key = pages[name] ? name || "overview" : "overview";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === key) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  live.listener = null;
  const view = document.getElementById("main");
  view.innerHTML = "";
  try {
    await page(view);
  } catch (error) {
    fail(error);
  }
}

// What this weir is (its systems, whether it runs a schema registry) and what the viewer may do, read once.
let consoleInfo = null;
let me = null;

// The login page, shown when the API wants credentials: a session cookie for this browser once they check out.
function loginPage() {
  document.querySelector("nav").hidden = true;
  const view = document.getElementById("main");
  view.innerHTML = `<section data-testid="login" class="login"><h1>Log in to weir</h1>
    <form id="login"><label>User <input name="user" autocomplete="username" required></label>
      <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
      <button type="submit">Log in</button> <span id="login-status" role="status"></span></form>
    <p class="muted">The users are weir's own (<code>weir users add</code>); what you may do is set by ACLs on the
      system <code>console</code> (READ to look, WRITE to act) and on each system.</p></section>`;
  view.querySelector("input[name=user]").focus();
  view.querySelector("#login").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const status = view.querySelector("#login-status");
    const response = await consoleFetch("/console/login", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: f.get("user"), password: f.get("password") }) });
    if (response.ok) location.reload();
    else status.textContent = response.status === 401 ? "Wrong user name or password." : `Cannot log in: HTTP ${response.status}`;
  });
}

// Hides what the viewer may not do: every element marked data-needs-write="SYSTEM" without WRITE on that system.
function applyPermissions() {
  const refused = Object.entries(me.systems).filter(([, may]) => !may.write).map(([name]) => name);
  document.getElementById("permissions").textContent = refused
    .map((name) => `[data-needs-write="${name}"] { display: none !important; }`).join("\n");
  const who = document.getElementById("who");
  who.hidden = me.anonymous;
  who.querySelector("span").textContent = me.principal.replace(/^User:/, "");
  who.querySelector("button").hidden = !me.session;
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("theme").addEventListener("click", cycleTheme);
  applyTheme();
  const first = await consoleFetch("/console/api/me?systems=console");
  if (first.status === 401) {
    loginPage();
    return;
  }
  try {
    consoleInfo = await api("/console/api/overview");
    me = await api(`/console/api/me?systems=${["console", ...consoleInfo.systems].map(encodeURIComponent).join(",")}`);
    applyPermissions();
    document.querySelector("nav a[data-page=schemas]").hidden = !consoleInfo.registry;
  } catch (error) {
    fail(error);
    return;
  }
  document.querySelector("#who button").addEventListener("click", async () => {
    await consoleFetch("/console/logout", { method: "POST" });
    location.reload();
  });
  startLive();
  window.addEventListener("hashchange", route);
  route();
});
