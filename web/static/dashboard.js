// The dashboard's live parts, filled from the read API (/api/...). Everything a model, a
// provider or an input file wrote is set as text (textContent), never parsed as HTML; the one
// HTML swapped in is the report's sections, rendered and escaped by the server's templates.
"use strict";

const POLL_MS = 2000;
const body = document.body;
const csrf = body.dataset.csrf;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (response.redirected) window.location.assign(response.url); // logged out: to the login
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

const number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en"));
const percent = (share) => (share === null || share === undefined ? "–" : `${(Math.floor(share * 1000) / 10).toFixed(1)}%`);

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

const rate = (r) => (r === null || r === undefined ? "–" : r.toFixed(r < 10 ? 1 : 0));
const cost = (s, key) => (s.cost ? (s.cost[key] ?? "unknown") : "–");
const schemaRate = (s) => (s.schema ? percent(s.schema.pass_rate) : "–");
const goldRate = (s) => (s.quality ? percent(s.quality.accuracy) : "–");

function countsText(s) {
  return Object.entries(s.counts).filter(([, n]) => n > 0).map(([name, n]) => `${name} ${number(n)}`).join(" · ");
}

function progressCell(s) {
  const share = s.total ? s.progress.finished / s.total : 0;
  const bar = el("span");
  bar.style.width = `${(share * 100).toFixed(1)}%`;
  return el("div", { class: "progress-cell" },
    el("div", { class: "progress", title: countsText(s) }, bar),
    el("span", { text: `${number(s.progress.finished)} / ${number(s.total)} · ${countsText(s)}` }));
}

function batchRow(s) {
  const status = el("span", { class: `badge ${s.status}`, text: s.status });
  const nameCell = el("td", {}, el("a", { href: `/batches/${encodeURIComponent(s.id)}`, text: s.name }));
  if (s.pause_reason) nameCell.append(el("div", { class: "note warn", text: `paused: ${s.pause_reason}` }));
  if (s.expiring.count) nameCell.append(el("div", { class: "note warn", text: `${number(s.expiring.count)} results expire soon` }));
  if (s.stalled_since) nameCell.append(el("div", { class: "note warn", text: `stalled since ${s.stalled_since}` }));
  const cells = [
    nameCell, el("td", {}, status), el("td", {}, progressCell(s)),
    el("td", { class: "r", text: rate(s.progress.rate_per_second) }),
    el("td", { class: "r", text: duration(s.progress.eta_seconds) }),
    el("td", { class: "r", text: cost(s, "so_far") }), el("td", { class: "r", text: cost(s, "projected_total") }),
    el("td", { class: "r", text: schemaRate(s) }), el("td", { class: "r", text: goldRate(s) }),
    el("td", { class: "r", text: number(s.possible_duplicates) }),
    el("td", { text: s.created_at.slice(0, 19).replace("T", " ") }),
  ];
  return el("tr", { "data-batch": s.id }, ...cells);
}

async function refreshBatches() {
  const form = document.getElementById("batch-filter");
  const query = new URLSearchParams(new FormData(form));
  const summaries = await getJSON(`/api/batches?${query}`);
  document.getElementById("batch-rows").replaceChildren(...summaries.map(batchRow));
  document.getElementById("no-batches").hidden = summaries.length > 0;
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function setText(id, text) {
  const node = document.getElementById(id);
  if (node) node.textContent = text;
}

function warnings(s) {
  const found = [];
  if (s.expiring.count) found.push(`${number(s.expiring.count)} submitted results expire at the provider by ${s.expiring.earliest_deadline}`);
  if (s.stalled_since) found.push(`no progress since ${s.stalled_since}: is a worker running?`);
  return found.join(" · ");
}

function workerRow(w) {
  return el("tr", {}, el("td", { text: w.state }), el("td", { text: w.host }), el("td", { class: "r", text: String(w.pid) }),
    el("td", { text: w.kind }), el("td", { text: w.beat_at.slice(11, 19) }), el("td", { class: "r", text: number(w.in_flight) }));
}

const SECTIONS_EVERY = 5; // polls between refreshes of the report's sections (heavier to build)
let polls = 0;
let lastStatus = null;

// The report's sections, rendered and escaped by the server (its own templates), swapped in
// while the batch is worked and once more when its status changes; the requests table's page
// is read again with them.
async function refreshSections(status) {
  const active = status === "running" || status === "cancelling";
  const changed = lastStatus !== null && status !== lastStatus;
  lastStatus = status;
  polls += 1;
  if (!changed && !(active && polls % SECTIONS_EVERY === 0)) return;
  const response = await fetch(`/batches/${encodeURIComponent(body.dataset.batch)}/sections`);
  if (response.ok && !response.redirected) {
    document.getElementById("report-sections").innerHTML = await response.text();
  }
  await loadRequests(); // the table's page too, where it is

}

async function refreshBatch() {
  const view = await getJSON(`/api/batches/${encodeURIComponent(body.dataset.batch)}`);
  const status = document.getElementById("live-status");
  status.textContent = view.status;
  status.className = `badge ${view.status}`;
  document.getElementById("live-bar").style.width = `${view.total ? (100 * view.progress.finished / view.total).toFixed(1) : 0}%`;
  setText("live-finished", `${number(view.progress.finished)} / ${number(view.total)}`);
  setText("live-rate", rate(view.progress.rate_per_second));
  setText("live-eta", duration(view.progress.eta_seconds));
  setText("live-cost", cost(view, "so_far"));
  setText("live-projected", cost(view, "projected_total"));
  setText("live-schema", schemaRate(view));
  setText("live-gold", goldRate(view));
  setText("live-duplicates", number(view.possible_duplicates));
  setText("live-counts", countsText(view));
  setText("live-updated", `live · updated ${new Date().toLocaleTimeString()}`);
  const pause = document.getElementById("live-pause");
  pause.hidden = !view.pause_reason;
  pause.textContent = view.pause_reason ? `Paused: ${view.pause_reason}` : "";
  const warn = document.getElementById("live-warnings");
  warn.textContent = warnings(view);
  warn.hidden = !warn.textContent;
  document.getElementById("worker-rows").replaceChildren(...view.workers.map(workerRow));
  document.getElementById("no-workers").hidden = view.workers.length > 0;
  await refreshSections(view.status);
}

const pages = { after: [0], next: null };

function requestRow(r) {
  const link = el("a", { href: `/requests/${r.id}`, text: r.custom_id });
  const answer = r.preview ?? (r.error_code ? `error: ${r.error_code}` : "");
  return el("tr", { "data-request": String(r.id) },
    el("td", { class: "r", text: String(r.line) }), el("td", {}, link),
    el("td", {}, el("span", { class: `badge ${r.status}`, text: r.status })),
    el("td", { class: "r", text: String(r.attempts) }),
    el("td", { class: "r", text: r.latency_seconds === null ? "" : `${r.latency_seconds.toFixed(1)} s` }),
    el("td", { class: "r", text: r.total_tokens === null ? "" : number(r.total_tokens) }),
    el("td", { class: "r", text: r.cost ?? "" }),
    el("td", { class: "preview", title: answer, text: answer }));
}

async function loadRequests() {
  const query = new URLSearchParams(new FormData(document.getElementById("request-filter")));
  query.set("after", pages.after[pages.after.length - 1]);
  const page = await getJSON(`/api/batches/${encodeURIComponent(body.dataset.batch)}/requests?${query}`);
  document.getElementById("request-rows").replaceChildren(...page.requests.map(requestRow));
  pages.next = page.next_after;
  document.getElementById("next-page").disabled = page.next_after === null;
  document.getElementById("first-page").disabled = pages.after.length === 1;
  setText("page-note", page.requests.length ? `lines ${page.requests[0].line}–${page.requests[page.requests.length - 1].line}` : "no requests match");
}

async function submitAction(event) {
  event.preventDefault();
  const form = event.currentTarget;
  if (!window.confirm(form.dataset.confirm)) return;
  const result = document.getElementById("action-result");
  const response = await fetch(`/batches/${encodeURIComponent(body.dataset.batch)}/${form.dataset.action}`, {
    method: "POST", body: new FormData(form), headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
  });
  const isJSON = (response.headers.get("content-type") || "").startsWith("application/json");
  const answer = isJSON ? await response.json() : { error: `${response.status} ${response.statusText}` };
  result.classList.toggle("error", !response.ok);
  result.textContent = response.ok ? `${answer.name}: ${answer.message}${answer.hint ? ` (${answer.hint})` : ""}` : answer.error;
  await Promise.all([refreshBatch(), loadRequests()]);
}

function every(fn) {
  const run = () => fn().catch((error) => console.warn(error));
  run();
  setInterval(run, POLL_MS);
}

function startBatches() {
  const form = document.getElementById("batch-filter");
  form.addEventListener("input", () => refreshBatches().catch(console.warn));
  form.addEventListener("submit", (event) => event.preventDefault());
  every(refreshBatches);
}

function startBatch() {
  every(refreshBatch);
  const filter = document.getElementById("request-filter");
  const reload = () => { pages.after = [0]; loadRequests().catch(console.warn); };
  filter.addEventListener("input", reload);
  filter.addEventListener("submit", (event) => { event.preventDefault(); reload(); });
  document.getElementById("next-page").addEventListener("click", () => {
    if (pages.next !== null) { pages.after.push(pages.next); loadRequests().catch(console.warn); }
  });
  document.getElementById("first-page").addEventListener("click", reload);
  for (const form of document.querySelectorAll("form.action")) form.addEventListener("submit", submitAction);
  loadRequests().catch(console.warn);
}

if (body.dataset.page === "batches") startBatches();
if (body.dataset.page === "batch") startBatch();
