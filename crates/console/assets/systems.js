// weir console: each system's live view (#/systems/NAME), read from the system's own HTTP API on the same port
// (the console knows no system: a view appears when its system runs). Uses app.js's helpers (api, esc, card,
// setCard, live, number). Each view refreshes with the live feed, at most every two seconds.
"use strict";

// A JSON request with a body; the answer, or an Error with the server's message.
async function send(method, path, body) {
  const response = await consoleFetch(path, { method, headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  let answer = null;
  try { answer = await response.json(); } catch (_) { /* no body */ }
  if (!response.ok) throw new Error((answer && answer.message) || `HTTP ${response.status}`);
  return answer;
}

// Calls `load` now and then with the live feed, at most every `every` ms, one call at a time.
function refreshing(load, every = 2000) {
  let last = Date.now(), busy = false;
  live.listener = () => {
    if (busy || Date.now() - last < every) return;
    last = Date.now();
    busy = true;
    load().catch(fail).finally(() => { busy = false; });
  };
  return load();
}

function clockText(ms) {
  if (ms === null || ms === undefined || ms < 0) return "–";
  const s = Math.floor(ms / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

// Several lines over shared x values: series = [{ name, color, points: [[x, y], ...] }].
function lines(series, { height = 180, label }) {
  const width = 600;
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  // One x value (a single window) sits in the middle rather than at the edge.
  const lo = Math.min(...xs), hi = Math.max(...xs);
  const x0 = hi > lo ? lo : lo - 1, x1 = hi > lo ? hi : hi + 1, y1 = Math.max(1, ...ys);
  const at = ([x, y]) => `${((x - x0) / (x1 - x0)) * width},${height - (y / y1) * (height - 10)}`;
  return `<svg viewBox="0 0 ${width} ${height}" preserveAspectRatio="none" role="img" aria-label="${esc(label)}">
    ${series.map((s) => `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${s.points.map(at).join(" ")}"/>`
      + (s.points.length === 1 ? `<circle r="4" fill="${s.color}" cx="${at(s.points[0]).split(",")[0]}" cy="${at(s.points[0]).split(",")[1]}"/>` : "")).join("")}</svg>
    <div class="legend">${series.map((s) => `<span><span class="swatch" style="background:${s.color}"></span>${esc(s.name)}</span>`).join("")}
    <span>max ${number.format(y1)}</span></div>`;
}

const palette = ["#0b5cad", "#1a7f37", "#9a6700", "#cf222e", "#8250df", "#1b7c83", "#bc4c00", "#6e7781", "#bf3989", "#4d2d00"];

// ---- Wedding: a timeline per team, stress against the exact optimum, start a simulated run ----
async function weddingView(view) {
  view.innerHTML = `<section data-testid="wedding"><p><a href="#/systems">Systems</a> /</p><h1>Wedding operations</h1>
    <form id="simulate" class="toolbar wrap" data-testid="simulate" data-needs-write="wedding">
      <label>Events <input name="events" type="number" min="1" max="5000" value="300"></label>
      <label>Seed <input name="seed" type="number" min="0" placeholder="random"></label>
      <label>Speed <select name="speed"><option value="10">10×</option><option value="1">1× (real time)</option>
        <option value="60">60×</option><option value="max">as fast as it goes</option></select></label>
      <label>Policy <select name="policy"><option value="edf">earliest deadline first</option><option value="fifo">oldest first</option></select></label>
      <label>Workers per team <input name="workers" type="number" min="1" max="1000" value="2"></label>
      <button type="submit">Start a simulated run</button> <span id="simulate-status" role="status"></span></form>
    <div class="cards">${card("Run", "w-run")}${card("Wedding time", "w-now")}${card("Events sent", "w-sent")}
      ${card("Handled", "w-happy")}${card("Missed (stress)", "w-stress")}${card("Open", "w-open")}</div>
    <p id="w-result" data-testid="wedding-result" class="result muted">No run yet.</p>
    <div class="chart"><div class="legend"><span>Per team over the wedding: arrivals <span class="swatch arrive"></span>,
      handlings <span class="swatch handled"></span>, misses <span class="swatch missed"></span></span></div>
      <div id="timeline" data-testid="timeline"></div></div>
    <div id="by-team"></div></section>`;
  const state = { run: null, finishedShown: null };
  view.querySelector("#simulate").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { events: Number(f.get("events")), speed: f.get("speed") === "max" ? "max" : Number(f.get("speed")),
      policy: f.get("policy"), workers: Number(f.get("workers")) };
    if (f.get("seed") !== "") body.seed = Number(f.get("seed"));
    const status = view.querySelector("#simulate-status");
    try {
      const answer = await send("POST", "/api/wedding/simulate", body);
      status.textContent = `Run ${answer.run} started: ${answer.simulation.events} events from seed ${answer.simulation.seed}.`;
      state.run = answer.run;
      state.finishedShown = null;
      await load();
    } catch (error) {
      status.textContent = `Not started: ${error.message}`;
    }
  });
  const load = async () => {
    if (state.run === null) {
      const { runs } = await api("/api/wedding/runs?limit=1");
      if (!runs.length) return; // no run yet
      state.run = runs[0].run;
    }
    const summary = await api(`/api/wedding/report?summary=true&run=${state.run}`);
    const sim = summary.simulation;
    setCard("w-run", summary.run, `#${summary.run}`);
    document.getElementById("w-run").classList.add("small");
    setCard("w-now", summary.now ?? -1, clockText(summary.now));
    setCard("w-sent", sim ? sim.sent : summary.events, sim ? `${number.format(sim.sent)} / ${number.format(sim.events)}` : number.format(summary.events));
    setCard("w-happy", summary.happy, number.format(summary.happy));
    setCard("w-stress", summary.stress, number.format(summary.stress));
    setCard("w-open", summary.open, number.format(summary.open));
    const { events } = await api(`/api/wedding/events?run=${summary.run}`);
    view.querySelector("#timeline").innerHTML = timeline(events, summary.now);
    const result = view.querySelector("#w-result");
    const finished = sim ? sim.finished && summary.open === 0 : summary.open === 0 && summary.events > 0;
    if (sim && sim.error) {
      result.textContent = `The simulation stopped: ${sim.error}`;
      result.className = "result error";
    } else if (!finished) {
      result.textContent = `Run #${summary.run} in progress: ${number.format(summary.stress)} missed so far.`;
      result.className = "result muted";
      result.dataset.finished = "false";
    } else if (state.finishedShown !== summary.run) {
      // The full report once the run is over: it carries the exact optimum (an integer program, not for every tick).
      const report = await api(`/api/wedding/report?run=${summary.run}`);
      const best = report.events - report.upper_bound;
      result.dataset.finished = "true";
      result.dataset.stress = String(report.stress);
      result.dataset.best = String(best);
      result.className = "result";
      result.innerHTML = `Run #${report.run} finished: stress <strong>${number.format(report.stress)}</strong> of
        ${number.format(report.events)} events, against <strong>${number.format(best)}</strong> for the best possible
        schedule (${esc(report.upper_bound_kind)}), policy ${esc(report.policy)}.`;
      view.querySelector("#by-team").innerHTML = `<h2>By team</h2><table data-testid="by-team"><thead><tr><th scope="col">Team</th>
        <th scope="col" class="num">Events</th><th scope="col" class="num">Handled</th><th scope="col" class="num">Missed</th>
        <th scope="col" class="num">Busy</th></tr></thead><tbody>${Object.entries(report.by_team).map(([t, n]) => `<tr><td>${esc(t)}</td>
        <td class="num">${number.format(n.events)}</td><td class="num">${number.format(n.happy)}</td>
        <td class="num">${number.format(n.stress)}</td><td class="num">${decimal.format(100 * (report.utilisation[t] || 0))} %</td></tr>`).join("")}
        </tbody></table>`;
      state.finishedShown = report.run;
    }
  };
  await refreshing(load, 1000);
}

// One row per team: a tick where each event arrived, a bar while it was handled, a cross where one was missed.
function timeline(events, now) {
  // An event nobody took shows on the first team its type goes to, as the report counts it.
  const teamOf = (e) => e.team || (e.teams && e.teams[0]) || "nobody";
  const teams = [...new Set(events.map(teamOf))].sort();
  const end = Math.max(1, now || 0, ...events.map((e) => e.deadline_ms));
  const width = 1100, row = 26, height = Math.max(1, teams.length) * row + 16;
  const x = (ms) => (ms / end) * (width - 100) + 100;
  const rows = teams.map((team, i) => {
    const y = i * row + 8;
    const mine = events.filter((e) => teamOf(e) === team);
    const marks = mine.map((e) => {
      const arrive = `<line x1="${x(e.happened_ms)}" x2="${x(e.happened_ms)}" y1="${y}" y2="${y + 6}" stroke="var(--muted)"/>`;
      if (e.status === "handled" && e.started_ms !== null && e.completed_ms !== null) {
        return `${arrive}<rect x="${x(e.started_ms)}" y="${y + 8}" width="${Math.max(1, x(e.completed_ms) - x(e.started_ms))}" height="8" fill="var(--out)" opacity="0.7"/>`;
      }
      if (e.status === "missed") return `${arrive}<text x="${x(e.deadline_ms)}" y="${y + 18}" fill="var(--bad)" font-size="10" text-anchor="middle">×</text>`;
      return arrive;
    }).join("");
    return `<text x="0" y="${y + 14}" font-size="12" fill="currentColor">${esc(team)}</text>${marks}`;
  }).join("");
  const cursor = now >= 0 ? `<line x1="${x(now)}" x2="${x(now)}" y1="0" y2="${height}" stroke="var(--accent)" stroke-dasharray="3 3"/>` : "";
  return `<svg viewBox="0 0 ${width} ${height}" style="height:auto" role="img"
    aria-label="${events.length} events over ${teams.length} teams, up to ${esc(clockText(end))}">${rows}${cursor}</svg>`;
}

// ---- Analytics: hourly counts per event type, late events ----
async function analyticsView(view) {
  view.innerHTML = `<section data-testid="analytics"><p><a href="#/systems">Systems</a> /</p><h1>Analytics pipeline</h1>
    <div class="cards">${card("Events consumed", "a-consumed")}${card("Events stored", "a-stored")}
      ${card("In memory", "a-memory")}${card("Late events", "a-late")}</div>
    <div class="chart"><div class="legend"><span>Events per hourly window, by type (the last 48 windows)</span></div>
      <div id="a-chart" data-testid="analytics-chart"></div></div>
    <div id="a-types"></div></section>`;
  const load = async () => {
    const stats = await api("/api/stats");
    setCard("a-consumed", stats.events_consumed, number.format(stats.events_consumed));
    setCard("a-stored", stats.events_stored, number.format(stats.events_stored));
    setCard("a-memory", stats.events_in_memory, number.format(stats.events_in_memory));
    setCard("a-late", stats.late_events, number.format(stats.late_events));
    const rows = (await api("/api/aggregations?limit=2000")).items;
    const windows = [...new Set(rows.map((r) => r.window_start))].sort().slice(-48);
    const types = [...new Set(rows.map((r) => r.event_type))].sort();
    const series = types.map((t, i) => ({
      name: t, color: palette[i % palette.length],
      points: windows.map((w, j) => [j, rows.filter((r) => r.window_start === w && r.event_type === t).reduce((n, r) => n + r.event_count, 0)]),
    }));
    view.querySelector("#a-chart").innerHTML = windows.length
      ? lines(series, { label: `Events per hour by type over ${windows.length} windows` })
        + `<div class="legend"><span>${esc(new Date(windows[0]).toLocaleString())}</span><span>${esc(new Date(windows[windows.length - 1]).toLocaleString())}</span></div>`
      : `<p class="muted">No window stored yet.</p>`;
    view.querySelector("#a-types").innerHTML = `<h2>By type</h2><table><thead><tr><th scope="col">Type</th><th scope="col" class="num">Events</th>
      <th scope="col" class="num">Unique users</th><th scope="col" class="num">Windows</th></tr></thead><tbody>
      ${stats.stats.map((s) => `<tr><td>${esc(s.event_type)}</td><td class="num">${number.format(s.total_events)}</td>
        <td class="num">${number.format(s.total_unique_users)}</td><td class="num">${number.format(s.window_count)}</td></tr>`).join("")}</tbody></table>`;
  };
  await refreshing(load, 5000);
}

// ---- Repair shop: tickets by state, a ticket's journey across the services ----
async function repairView(view) {
  view.innerHTML = `<section data-testid="repair"><p><a href="#/systems">Systems</a> /</p><h1>Car repair shop</h1>
    <div class="cards" id="r-states"></div>
    <div class="columns"><div><h2>Latest tickets</h2><table data-testid="tickets"><thead><tr><th scope="col">Ticket</th>
      <th scope="col">Status</th><th scope="col">Repair</th></tr></thead><tbody></tbody></table></div>
      <div><h2>Journey</h2><div id="journey" data-testid="journey"><p class="muted">Choose a ticket.</p></div></div></div></section>`;
  const journey = async (id) => {
    const t = await api(`/api/repair/tickets/${encodeURIComponent(id)}`);
    view.querySelector("#journey").innerHTML = `<p>${esc(id)}${t.trace_id ? ` · trace ${esc(t.trace_id)}` : ""}</p><ol>
      ${(t.events || []).map((j) => `<li><strong>${esc(j.event)}</strong> by ${esc(j.service)}${j.at ? ` at ${esc(new Date(j.at).toLocaleString())}` : ""}
        ${j.scheduled_at ? ` for ${esc(new Date(j.scheduled_at).toLocaleString())}` : ""}${j.amount !== undefined ? `, ${esc(j.amount)}` : ""}</li>`).join("")}</ol>`;
  };
  const load = async () => {
    const stats = await api("/api/repair/stats");
    view.querySelector("#r-states").innerHTML = Object.entries(stats.tickets)
      .map(([s, n]) => `<div class="card"><div class="label">${esc(s)}</div><div class="value" data-state="${esc(s)}">${number.format(n)}</div></div>`).join("");
    const { tickets } = await api("/api/repair/tickets?limit=20");
    view.querySelector("[data-testid=tickets] tbody").innerHTML = tickets.length ? tickets.map((t) => `<tr>
      <td><button type="button" class="link" data-ticket="${esc(t.ticket_id)}">${esc(String(t.ticket_id).slice(0, 13))}…</button></td>
      <td>${esc(t.status)}</td><td>${esc(t.repair_type || "")}</td></tr>`).join("") : `<tr><td colspan="3" class="muted">No tickets.</td></tr>`;
    view.querySelectorAll("button[data-ticket]").forEach((b) => b.addEventListener("click", () => journey(b.dataset.ticket).catch(fail)));
  };
  await refreshing(load, 3000);
}

// ---- Dispatch: waiting events, each reviewer's open assignments; a reviewer's own queue with approve/reject ----
async function dispatchView(view, reviewer) {
  if (reviewer) return reviewerView(view, reviewer);
  view.innerHTML = `<section data-testid="dispatch"><p><a href="#/systems">Systems</a> /</p><h1>Dispatch</h1>
    <div class="cards">${card("Waiting events", "d-waiting")}${card("Assigned in all", "d-assigned")}${card("Active reviewers", "d-active")}</div>
    <div class="cards" id="d-states"></div>
    <form id="d-open" class="toolbar"><label>Reviewer <input name="user" required autocomplete="off"></label>
      <button type="submit">Open their queue</button></form>
    <h2>Reviewers</h2><table data-testid="reviewers"><thead><tr><th scope="col">Reviewer</th><th scope="col">Session</th>
      <th scope="col" class="num">Open assignments</th></tr></thead><tbody></tbody></table></section>`;
  view.querySelector("#d-open").addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = `#/systems/dispatch/${encodeURIComponent(new FormData(e.target).get("user"))}`;
  });
  const load = async () => {
    const s = await api("/api/dispatch/stats");
    const users = Object.entries(s.users || {});
    setCard("d-waiting", s.waiting, number.format(s.waiting));
    setCard("d-assigned", s.assignedTotal, number.format(s.assignedTotal));
    setCard("d-active", users.filter(([, u]) => u.active).length, number.format(users.filter(([, u]) => u.active).length));
    view.querySelector("#d-states").innerHTML = Object.entries(s.events || {})
      .map(([k, n]) => `<div class="card"><div class="label">${esc(k)}</div><div class="value">${number.format(n)}</div></div>`).join("");
    view.querySelector("[data-testid=reviewers] tbody").innerHTML = users.length ? users.map(([id, u]) => `<tr>
      <td><a href="#/systems/dispatch/${encodeURIComponent(id)}">${esc(id)}</a></td><td>${u.active ? "active" : "–"}</td>
      <td class="num">${number.format(u.open)}</td></tr>`).join("") : `<tr><td colspan="3" class="muted">No reviewer yet.</td></tr>`;
  };
  await refreshing(load);
}

async function reviewerView(view, user) {
  const base = `/api/dispatch/users/${encodeURIComponent(user)}`;
  view.innerHTML = `<section data-testid="reviewer"><p><a href="#/systems">Systems</a> / <a href="#/systems/dispatch">Dispatch</a> /</p>
    <h1>${esc(user)}'s queue</h1><div class="toolbar" data-needs-write="dispatch"><button type="button" id="activate">Start a 5-minute session</button>
    <button type="button" id="deactivate">End the session</button><span id="r-status" role="status"></span></div>
    <table data-testid="queue"><thead><tr><th scope="col">Event</th><th scope="col">Rule</th><th scope="col">Region</th>
      <th scope="col" class="num">Severity</th><th scope="col">Assigned</th><th scope="col">Decision</th></tr></thead><tbody></tbody></table></section>`;
  const status = view.querySelector("#r-status");
  const act = (method, path, body, said) => send(method, path, body).then(() => { status.textContent = said; return load(); })
    .catch((error) => { status.textContent = error.message; });
  view.querySelector("#activate").addEventListener("click", () => act("POST", `${base}/active`, undefined, "Session started."));
  view.querySelector("#deactivate").addEventListener("click", () => act("DELETE", `${base}/active`, undefined, "Session ended."));
  const load = async () => {
    const q = await api(`${base}/assignments`);
    view.querySelector("#activate").textContent = q.active ? "Renew the session" : "Start a 5-minute session";
    view.querySelector("[data-testid=queue] tbody").innerHTML = q.assignments.length ? q.assignments.map((a) => `<tr>
      <td>${esc(a.eventId)}</td><td>${esc(a.ruleType || "")}</td><td>${esc(a.region || "")}</td><td class="num">${a.severity ?? ""}</td>
      <td>${esc(new Date(a.assignedAt).toLocaleTimeString())}</td><td data-needs-write="dispatch"><button type="button" data-settle="approved" data-id="${esc(a.assignmentId)}">Approve</button>
      <button type="button" data-settle="rejected" data-id="${esc(a.assignmentId)}">Reject</button></td></tr>`).join("")
      : `<tr><td colspan="6" class="muted">Nothing assigned${q.active ? " yet" : ": start a session to receive events"}.</td></tr>`;
    view.querySelectorAll("button[data-settle]").forEach((b) => b.addEventListener("click",
      () => act("PUT", `/api/dispatch/assignments/${encodeURIComponent(b.dataset.id)}`, { status: b.dataset.settle }, `Marked ${b.dataset.settle}.`)));
  };
  await refreshing(load);
}

// ---- Waitroom: queue depth, admission rate, in checkout, wait times per event ----
async function waitroomView(view) {
  const chosen = localStorage.getItem("weir-waitroom-event") || "";
  view.innerHTML = `<section data-testid="waitroom"><p><a href="#/systems">Systems</a> /</p><h1>Waitroom</h1>
    <form id="w-event" class="toolbar"><label>Event <input name="event" value="${esc(chosen)}" required autocomplete="off" placeholder="concert-2027"></label>
      <button type="submit">Show</button></form>
    <div class="cards">${card("Waiting", "q-waiting")}${card("In checkout", "q-checkout")}${card("Admitted / s", "q-rate")}
      ${card("Wait p50", "q-p50")}${card("Wait p99", "q-p99")}</div>
    <div class="chart"><div class="legend"><span>Waiting and in checkout over the last minutes</span></div><div id="q-chart"></div></div></section>`;
  const samples = [];
  let event = chosen;
  view.querySelector("#w-event").addEventListener("submit", (e) => {
    e.preventDefault();
    event = new FormData(e.target).get("event");
    localStorage.setItem("weir-waitroom-event", event);
    samples.length = 0;
    load().catch(fail);
  });
  const ms = (v) => (v === null || v === undefined ? "–" : v >= 1000 ? `${decimal.format(v / 1000)} s` : `${number.format(v)} ms`);
  const load = async () => {
    if (!event) return;
    const s = await api(`/api/v1/waitroom/events/${encodeURIComponent(event)}/stats`);
    setCard("q-waiting", s.waiting, number.format(s.waiting));
    setCard("q-checkout", s.in_checkout, number.format(s.in_checkout));
    setCard("q-rate", s.admitted_per_second, decimal.format(s.admitted_per_second || 0));
    setCard("q-p50", s.wait_ms_p50 ?? -1, ms(s.wait_ms_p50));
    setCard("q-p99", s.wait_ms_p99 ?? -1, ms(s.wait_ms_p99));
    samples.push([Date.now() / 1000, s.waiting, s.in_checkout]);
    if (samples.length > 300) samples.shift();
    view.querySelector("#q-chart").innerHTML = lines([
      { name: "waiting", color: "var(--warn)", points: samples.map((p) => [p[0], p[1]]) },
      { name: "in checkout", color: "var(--out)", points: samples.map((p) => [p[0], p[2]]) },
    ], { label: `Waiting and in checkout for ${event}` });
  };
  await refreshing(load);
}

const systemViews = {
  wedding: { title: "Wedding operations", view: weddingView },
  analytics: { title: "Analytics pipeline", view: analyticsView },
  repair: { title: "Car repair shop", view: repairView },
  dispatch: { title: "Dispatch", view: dispatchView },
  waitroom: { title: "Waitroom", view: waitroomView },
};

// #/systems: the systems this weir runs, each with its view.
async function systemsPage(view) {
  const info = await api("/console/api/overview");
  view.innerHTML = `<section data-testid="systems"><h1>Systems</h1>${info.systems.length ? `<ul class="systems">
    ${info.systems.map((s) => `<li><a href="#/systems/${encodeURIComponent(s)}">${esc(systemViews[s]?.title || s)}</a></li>`).join("")}</ul>`
    : `<p class="muted">This weir runs no system (<code>weir up --systems all</code> runs them all).</p>`}</section>`;
}

// #/systems/NAME[/MORE]: the system's view, when it runs here.
async function systemPage(view, name, more) {
  const info = await api("/console/api/overview");
  if (!info.systems.includes(name) || !systemViews[name]) {
    view.innerHTML = `<section><p><a href="#/systems">Systems</a> /</p><h1>${esc(name)}</h1>
      <p class="muted">This weir does not run ${esc(name)}.</p></section>`;
    return;
  }
  await systemViews[name].view(view, more);
}

// ---- Schemas (when the registry runs): subjects, versions side by side, compatibility, checking a draft ----
const registry = "/console/api/registry";

// A schema's text laid out for reading: JSON (Avro, JSON Schema) indented, Protobuf as written.
function prettySchema(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
}

// The lines of two texts aligned (a longest common subsequence): [{ left, right, kind: same|del|add|change }].
function diffLines(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  if (x.length * y.length > 4_000_000) return x.map((l, i) => ({ left: l, right: y[i] ?? "", kind: l === y[i] ? "same" : "change" }));
  const n = x.length, m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const rows = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { rows.push({ left: x[i], right: y[j], kind: "same" }); i++; j++; }
    else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) { rows.push({ left: null, right: y[j], kind: "add" }); j++; }
    else { rows.push({ left: x[i], right: null, kind: "del" }); i++; }
  }
  return rows;
}

async function schemasPage(view) {
  view.innerHTML = `<section data-testid="schemas"><h1>Schemas</h1>
    <div class="toolbar"><label for="filter">Filter subjects</label><input id="filter" type="search" autocomplete="off">
      <span id="s-count" class="muted"></span></div>
    <table data-testid="subjects"><thead><tr><th scope="col">Subject</th><th scope="col">Type</th>
      <th scope="col" class="num">Latest version</th><th scope="col" class="num">Id</th></tr></thead><tbody></tbody></table>
    <div class="toolbar"><button type="button" id="prev">Previous</button><button type="button" id="next">Next</button></div></section>`;
  const subjects = await api(`${registry}/subjects`);
  const state = { q: "", offset: 0, limit: 50 };
  const load = async () => {
    const shown = subjects.filter((s) => s.toLowerCase().includes(state.q.toLowerCase()));
    const page = shown.slice(state.offset, state.offset + state.limit);
    const latest = await Promise.all(page.map((s) => api(`${registry}/subjects/${encodeURIComponent(s)}/versions/latest`)));
    view.querySelector("tbody").innerHTML = page.length ? page.map((s, i) => `<tr><td><a href="#/schemas/${encodeURIComponent(s)}">${esc(s)}</a></td>
      <td>${esc(latest[i].schemaType || "AVRO")}</td><td class="num">${latest[i].version}</td><td class="num">${latest[i].id}</td></tr>`).join("")
      : `<tr><td colspan="4" class="muted">No subject${state.q ? " matching" : " registered yet"}.</td></tr>`;
    view.querySelector("#s-count").textContent = `${number.format(shown.length)} subject(s)`;
    view.querySelector("#prev").disabled = state.offset === 0;
    view.querySelector("#next").disabled = state.offset + state.limit >= shown.length;
  };
  let typing;
  view.querySelector("#filter").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = e.target.value; state.offset = 0; load().catch(fail); }, 200);
  });
  view.querySelector("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); load().catch(fail); });
  view.querySelector("#next").addEventListener("click", () => { state.offset += state.limit; load().catch(fail); });
  await load();
}

async function subjectPage(view, subject) {
  const base = `${registry}/subjects/${encodeURIComponent(subject)}`;
  const [versions, config] = await Promise.all([api(`${base}/versions`),
    api(`${registry}/config/${encodeURIComponent(subject)}?defaultToGlobal=true`)]);
  const options = (chosen) => versions.map((v) => `<option value="${v}" ${v === chosen ? "selected" : ""}>version ${v}</option>`).join("");
  const last = versions[versions.length - 1], before = versions.length > 1 ? versions[versions.length - 2] : last;
  view.innerHTML = `<section data-testid="subject"><p><a href="#/schemas">Schemas</a> /</p><h1>${esc(subject)}</h1>
    <div class="cards">${card("Versions", "s-versions", number.format(versions.length))}${card("Compatibility", "s-compat", config.compatibilityLevel)}
      ${card("Latest id", "s-id")}${card("Type", "s-type")}</div>
    <div class="toolbar"><label>Compare <select id="left">${options(before)}</select></label>
      <label>with <select id="right">${options(last)}</select></label></div>
    <table class="diff" data-testid="diff"><thead><tr><th scope="col" id="left-title"></th><th scope="col" id="right-title"></th></tr></thead><tbody></tbody></table>
    <form id="draft" data-testid="draft" data-needs-write="console"><h2>Check a draft against the latest version</h2>
      <label>Type <select name="type"><option>AVRO</option><option>JSON</option><option>PROTOBUF</option></select></label>
      <label>Schema <textarea name="schema" rows="10" spellcheck="false"></textarea></label>
      <button type="submit">Check compatibility (${esc(config.compatibilityLevel)})</button>
      <div id="draft-result" role="status" data-testid="draft-result"></div></form></section>`;
  const fetchVersion = (v) => api(`${base}/versions/${v}`);
  const compare = async () => {
    const [l, r] = await Promise.all([fetchVersion(view.querySelector("#left").value), fetchVersion(view.querySelector("#right").value)]);
    view.querySelector("#left-title").textContent = `version ${l.version} (id ${l.id})`;
    view.querySelector("#right-title").textContent = `version ${r.version} (id ${r.id})`;
    view.querySelector(".diff tbody").innerHTML = diffLines(prettySchema(l.schema), prettySchema(r.schema)).map((row) => `<tr class="${row.kind}">
      <td><pre>${row.left === null ? "" : esc(row.left)}</pre></td><td><pre>${row.right === null ? "" : esc(row.right)}</pre></td></tr>`).join("");
  };
  view.querySelector("#left").addEventListener("change", () => compare().catch(fail));
  view.querySelector("#right").addEventListener("change", () => compare().catch(fail));
  const latest = await fetchVersion("latest");
  setCard("s-id", latest.id, String(latest.id));
  setCard("s-type", latest.schemaType || "AVRO", latest.schemaType || "AVRO");
  const draft = view.querySelector("#draft");
  draft.querySelector("select[name=type]").value = latest.schemaType || "AVRO";
  draft.querySelector("textarea[name=schema]").value = prettySchema(latest.schema);
  draft.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(draft);
    const out = view.querySelector("#draft-result");
    try {
      const answer = await send("POST", `${registry}/compatibility/subjects/${encodeURIComponent(subject)}/versions/latest?verbose=true`,
        { schema: f.get("schema"), schemaType: f.get("type") });
      out.dataset.compatible = String(answer.is_compatible);
      out.className = answer.is_compatible ? "ok" : "error";
      out.innerHTML = answer.is_compatible ? "Compatible with the latest version."
        : `Not compatible with the latest version:<ul>${(answer.messages || []).map((m) => `<li>${esc(m)}</li>`).join("")}</ul>`;
    } catch (error) {
      out.dataset.compatible = "";
      out.className = "error";
      out.textContent = `Cannot check: ${error.message}`;
    }
  });
  await compare();
}
