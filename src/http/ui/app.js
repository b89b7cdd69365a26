// jobq's web page: the job list, a job's detail and the status strip, over the API at
// `api/...` (the daemon's routes, authenticated by the session cookie the login set). No data
// is ever written as HTML: every text goes in through textContent.
"use strict";

const STATUSES = ["created", "waiting", "processing", "terminating", "success", "warning",
  "error", "terminated", "cancelled"];
const EVENT_TYPES = ["info", "warn", "error"];
const LIST_REFRESH_MS = 5000;
const STRIP_REFRESH_MS = 10000;
const JOB_REFRESH_MS = 2000;
const MAX_EVENTS = 5000;

// What the current view started (timers, event streams), stopped when the view changes.
let stops = [];

// ---- the API ----

class Unauthorized extends Error {}

// The JSON answer of `path` (relative to the API); every request carries the page's header,
// which state-changing requests need.
async function api(path, options = {}) {
  const headers = Object.assign({ "X-Jobq-Page": "1" }, options.headers || {});
  const answer = await fetch("api/" + path, Object.assign({}, options, {
    headers, credentials: "same-origin", cache: "no-store",
  }));
  if (answer.status === 401) throw new Unauthorized();
  const text = await answer.text();
  const body = text ? JSON.parse(text) : null;
  if (!answer.ok) throw new Error((body && body.error) || `HTTP ${answer.status}`);
  return body;
}

// ---- DOM helpers ----

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes);
}

function badge(status) {
  return el("span", { class: "badge " + status }, status);
}

function jobLink(id) {
  return el("a", { href: "#/jobs/" + encodeURIComponent(id) }, id);
}

// `2026-11-29T14:05:43+00:00` as `2026-11-29 14:05:43` (UTC).
function time(text) {
  if (!text) return "–";
  const date = new Date(text);
  if (isNaN(date)) return text;
  return date.toISOString().slice(0, 19).replace("T", " ");
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  seconds = Math.round(seconds);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

// Runs `work` every `ms` until the view changes, or until the stop it returns is called.
function every(ms, work) {
  const timer = setInterval(work, ms);
  const stop = () => clearInterval(timer);
  stops.push(stop);
  return stop;
}

function failed(error, where) {
  if (error instanceof Unauthorized) return login();
  where.textContent = error.message;
  where.hidden = false;
}

// ---- login ----

function login(message) {
  stopView();
  document.getElementById("strip").hidden = true;
  document.getElementById("who").hidden = true;
  document.getElementById("logout").hidden = true;
  const token = el("input", { id: "token", type: "password", autocomplete: "off",
    placeholder: "API token", required: true });
  const error = el("p", { id: "login-error", class: "error", hidden: !message }, message || "");
  const form = el("form", { id: "login", class: "card", onsubmit: async (event) => {
    event.preventDefault();
    const answer = await fetch("session", {
      method: "POST", credentials: "same-origin",
      headers: { "X-StorageApi-Token": token.value },
    });
    token.value = "";
    if (!answer.ok) {
      const body = await answer.json().catch(() => ({}));
      error.textContent = body.error || `HTTP ${answer.status}`;
      error.hidden = false;
      return;
    }
    start();
  } },
  el("h1", {}, "Log in to jobq"),
  el("label", { for: "token" }, "API token (one of the daemon's [[tokens]])"),
  token, el("button", { type: "submit" }, "Log in"), error);
  show(form);
  token.focus();
}

async function logout() {
  await fetch("logout", { method: "POST", credentials: "same-origin",
    headers: { "X-Jobq-Page": "1" } });
  login("Logged out.");
}

// ---- the status strip ----

async function refreshStrip() {
  try {
    const status = await api("status");
    document.getElementById("slots").textContent = `${status.slots.used}/${status.slots.max}`;
    const engine = document.getElementById("engine");
    engine.textContent = status.engine.up ? "up" : "down";
    engine.className = status.engine.up ? "good" : "bad";
    const images = document.getElementById("images");
    const missing = status.missingImages;
    if (missing === null) {
      images.textContent = "unknown";
      images.className = "";
    } else if (missing.length === 0) {
      images.textContent = "all present";
      images.className = "good";
    } else {
      images.textContent = "missing: " +
        missing.map((m) => `${m.component} (${m.image})`).join(", ");
      images.className = "bad";
    }
  } catch (error) {
    if (error instanceof Unauthorized) login();
  }
}

// ---- Keboola's search syntax ----

// Fields of `field:value` terms and the listing parameter each sets.
const FIELDS = {
  id: "id", runId: "runId", parentRunId: "parentRunId", status: "status",
  component: "componentId", componentId: "componentId", config: "configId",
  configId: "configId", configRowIds: "configRowIds", mode: "mode", type: "type",
  branchId: "branchId", tokenId: "tokenId", tokenDescription: "tokenDescription",
  "token.description": "tokenDescription",
};
// Fields compared with `>`, `>=`, `<`, `<=` (or equal, without one), and whether they count.
const RANGES = {
  durationSeconds: true, createdTime: false, startTime: false, endTime: false,
};

// The listing parameters of a search (`status:error durationSeconds:>120`), as
// [name, value] pairs; throws an error saying what it cannot read.
function parseSearch(text) {
  const params = [];
  const term = /\s*([A-Za-z.]+):(?:"([^"]*)"|(\S+))\s*/y;
  let at = 0;
  text = text.trim();
  while (at < text.length) {
    term.lastIndex = at;
    const match = term.exec(text);
    if (!match) {
      const rest = text.slice(at).split(/\s+/)[0];
      throw new Error(`Cannot read "${rest}": write field:value, like status:error or ` +
        "durationSeconds:>120.");
    }
    at = term.lastIndex;
    const field = match[1];
    const value = match[2] !== undefined ? match[2] : match[3];
    if (field in FIELDS) {
      for (const one of value.split(",")) params.push([FIELDS[field], one]);
    } else if (field in RANGES) {
      params.push(...range(field, value, RANGES[field]));
    } else {
      throw new Error(`Unknown field "${field}"; known: ` +
        [...Object.keys(FIELDS), ...Object.keys(RANGES)].join(", ") + ".");
    }
  }
  return params;
}

function range(field, text, counted) {
  const [, op, value] = /^(>=|<=|>|<)?(.+)$/.exec(text);
  if (counted && !/^\d+$/.test(value)) {
    throw new Error(`${field} needs a whole number, like ${field}:>120.`);
  }
  // Counted bounds are inclusive: `>120` starts at 121.
  const step = (n) => (counted ? String(Number(value) + n) : value);
  const from = `${field}From`;
  const to = `${field}To`;
  switch (op) {
    case ">": return [[from, step(1)]];
    case ">=": return [[from, value]];
    case "<": return [[to, step(-1)]];
    case "<=": return [[to, value]];
    default: return counted ? [[from, value], [to, value]] : [[from, value]];
  }
}

// ---- the job list ----

// The list's filters, kept in the page's address (`#/?q=...&status=...`).
function listFilters() {
  const query = new URLSearchParams(location.hash.split("?")[1] || "");
  return {
    q: query.get("q") || "", status: query.get("status") || "",
    component: query.get("component") || "", config: query.get("config") || "",
    since: query.get("since") || "",
  };
}

async function listPage() {
  const filters = listFilters();
  const search = el("input", { id: "search", type: "search", value: filters.q,
    placeholder: "status:error durationSeconds:>120", size: 40 });
  const status = el("select", { id: "status" }, el("option", { value: "" }, "any status"),
    STATUSES.map((s) => el("option", { value: s, selected: s === filters.status }, s)));
  const component = el("select", { id: "component" },
    el("option", { value: "" }, "any component"));
  const config = el("input", { id: "config", placeholder: "configuration id", size: 14,
    value: filters.config });
  const since = el("select", { id: "since" },
    [["", "any time"], ["-1 hour", "last hour"], ["-1 day", "last 24 hours"],
      ["-7 days", "last 7 days"], ["-30 days", "last 30 days"]]
      .map(([value, label]) => el("option", { value, selected: value === filters.since }, label)));
  const auto = el("input", { id: "auto", type: "checkbox", checked: true });
  const error = el("p", { id: "list-error", class: "error", hidden: true });
  const rows = el("tbody", { id: "jobs" });
  const count = el("span", { id: "count" });

  const apply = (event) => {
    if (event) event.preventDefault();
    const query = new URLSearchParams();
    const values = { q: search.value.trim(), status: status.value,
      component: component.value, config: config.value.trim(), since: since.value };
    for (const [key, value] of Object.entries(values)) if (value) query.set(key, value);
    const hash = "#/?" + query.toString();
    if (location.hash === hash) load();
    else location.hash = hash;
  };
  for (const input of [status, component, since]) input.addEventListener("change", apply);

  const load = async () => {
    let params;
    try {
      params = parseSearch(filters.q);
    } catch (problem) {
      error.textContent = problem.message;
      error.hidden = false;
      rows.replaceChildren();
      count.textContent = "";
      return;
    }
    if (filters.status) params.push(["status", filters.status]);
    if (filters.component) params.push(["componentId", filters.component]);
    if (filters.config) params.push(["configId", filters.config]);
    if (filters.since) params.push(["createdTimeFrom", filters.since]);
    params.push(["limit", "100"]);
    const query = new URLSearchParams(params).toString();
    try {
      const jobs = await api("search/jobs?" + query);
      error.hidden = true;
      rows.replaceChildren(...jobs.map(jobRow));
      count.textContent = jobs.length === 1 ? "1 job" : `${jobs.length} jobs`;
    } catch (problem) {
      failed(problem, error);
    }
  };

  show(
    el("form", { id: "filters", class: "filters", onsubmit: apply },
      search, status, component, config, since,
      el("button", { type: "submit" }, "Search"),
      el("label", { class: "auto" }, auto, " auto-refresh")),
    error,
    el("table", { class: "jobs" },
      el("thead", {}, el("tr", {}, ["Job", "Run ID", "Component", "Configuration", "Status",
        "Created", "Duration", "Message"].map((h) => el("th", {}, h)))),
      rows),
    el("p", { class: "muted" }, count));

  api("v2/storage/components").then((components) => {
    component.append(...components.map((c) =>
      el("option", { value: c.id, selected: c.id === filters.component }, c.id)));
  }).catch(() => {});
  await load();
  every(LIST_REFRESH_MS, () => { if (auto.checked) load(); });
}

function jobRow(job) {
  return el("tr", { "data-id": job.id },
    el("td", {}, jobLink(job.id)),
    el("td", {}, job.runId),
    el("td", {}, job.component),
    el("td", {}, job.config || "–"),
    el("td", {}, badge(job.status)),
    el("td", {}, time(job.createdTime)),
    el("td", {}, duration(job.durationSeconds)),
    el("td", { class: "message" }, (job.result && job.result.message) || ""));
}

// ---- a job's detail ----

async function jobPage(id) {
  const error = el("p", { id: "job-error", class: "error", hidden: true });
  const head = el("div", { class: "title" });
  const facts = el("dl", { id: "facts", class: "facts" });
  const request = el("pre", { id: "request" });
  const children = el("div", { id: "children" });
  const tables = el("div", { id: "tables" });
  const archives = el("div", { id: "archives" });
  const typeFilter = el("select", { id: "event-type" }, el("option", { value: "" }, "all types"),
    EVENT_TYPES.map((t) => el("option", { value: t }, t)));
  const events = el("tbody", { id: "events" });
  const streamState = el("span", { id: "stream-state", class: "muted" });
  show(el("p", {}, el("a", { href: "#/" }, "← Jobs")), head, error,
    el("section", {}, facts),
    el("section", {}, el("h2", {}, "Events ", streamState), el("label", {}, "Type ", typeFilter),
      el("table", { class: "events" },
        el("thead", {}, el("tr", {}, ["Time", "Type", "Run ID", "Message"]
          .map((h) => el("th", {}, h)))), events)),
    el("section", {}, el("h2", {}, "Child jobs"), children),
    el("section", {}, el("h2", {}, "Tables"), tables),
    el("section", {}, el("h2", {}, "Debug archives"), archives),
    el("section", {}, el("h2", {}, "Request"),
      el("p", { class: "muted" }, "# values are shown as stored: encrypted."), request));

  let job;
  const load = async () => {
    try {
      job = await api("jobs/" + encodeURIComponent(id));
    } catch (problem) {
      failed(problem, error);
      return null;
    }
    renderHead(job, head, load);
    renderFacts(job, facts);
    request.textContent = JSON.stringify(requestOf(job), null, 2);
    return job;
  };
  if (!(await load())) return;
  renderChildren(job, children);
  renderTables(job, tables);
  renderArchives(job, archives);
  followEvents(job, events, typeFilter, streamState, async () => {
    await load();
    renderChildren(job, children);
    renderTables(job, tables);
    renderArchives(job, archives);
  });
  // Status changes before the end (the end itself comes with the event stream's last message).
  if (!job.isFinished) {
    const stop = every(JOB_REFRESH_MS, async () => {
      const before = job.status;
      if (!(await load())) return;
      if (job.status !== before) renderChildren(job, children);
      if (job.isFinished) stop();
    });
  }
}

function renderHead(job, head, reload) {
  const kill = el("button", { id: "kill", type: "button", class: "danger",
    hidden: job.isFinished || job.desiredStatus !== "processing", onclick: async () => {
      if (!confirm(`Kill job ${job.id} (${job.component})? A running container is stopped.`)) {
        return;
      }
      try {
        await api(`jobs/${encodeURIComponent(job.id)}/kill`, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
        });
      } catch (problem) {
        failed(problem, document.getElementById("job-error"));
      }
      reload();
      refreshStrip();
    } }, "Kill");
  head.replaceChildren(el("h1", {}, `Job ${job.id} `, el("span", { id: "job-status" },
    badge(job.status))), kill);
}

function renderFacts(job, facts) {
  const started = job.startTime ? new Date(job.startTime) : null;
  const created = new Date(job.createdTime);
  let wait;
  if (started) wait = duration((started - created) / 1000);
  else if (job.isFinished) wait = "never started";
  else wait = `${duration((Date.now() - created) / 1000)} so far`;
  const images = ((job.result && job.result.images) || []).flat()
    .map((image) => image.id || JSON.stringify(image));
  const rows = [
    ["Status", job.status + (job.desiredStatus !== "processing"
      ? ` (asked: ${job.desiredStatus})` : "")],
    ["Message", (job.result && job.result.message) || "–"],
    ["Component", job.component],
    ["Configuration", job.config || "– (configData)"],
    ["Mode", job.mode],
    ["Type", job.type],
    ["Run ID", job.runId],
    ["Parent run ID", job.parentRunId || "–"],
    ["Tag", job.tag || "–"],
    ["Image", images.length ? images.join(", ") : "–"],
    ["Created", time(job.createdTime)],
    ["Started", time(job.startTime)],
    ["Ended", time(job.endTime)],
    ["Queue wait", wait],
    ["Duration", duration(job.durationSeconds)],
    ["Token", job.token.description],
  ];
  facts.replaceChildren(...rows.flatMap(([name, value]) => [
    el("dt", {}, name),
    el("dd", { "data-fact": name }, value),
  ]));
}

// What was asked: the job's request fields (its `#` values as the stored ciphertexts).
function requestOf(job) {
  const request = {};
  for (const key of ["component", "config", "mode", "configRowIds", "tag", "branchId",
    "variableValuesId", "variableValuesData", "configData", "backend", "parallelism",
    "behavior", "previousJobId"]) {
    const value = job[key];
    if (value === null || value === undefined) continue;
    if (Array.isArray(value) && value.length === 0) continue;
    if (typeof value === "object" && !Array.isArray(value) && Object.keys(value).length === 0) {
      continue;
    }
    request[key] = value;
  }
  return request;
}

// Its descendants, depth first, each with its depth.
async function descendants(job, depth = 1) {
  const children = await api("search/jobs?parentRunId=" + encodeURIComponent(job.runId) +
    "&sortOrder=asc&limit=500");
  const tree = [];
  for (const child of children) {
    tree.push([child, depth], ...await descendants(child, depth + 1));
  }
  return tree;
}

async function renderChildren(job, where) {
  try {
    const tree = await descendants(job);
    if (tree.length === 0) {
      where.replaceChildren(el("p", { class: "muted" }, "None."));
      return;
    }
    where.replaceChildren(el("table", { class: "jobs" },
      el("thead", {}, el("tr", {}, ["Job", "Run ID", "Component", "Status", "Duration"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, tree.map(([child, depth]) => el("tr", { "data-id": child.id },
        el("td", { class: "depth" + Math.min(depth, 4) }, jobLink(child.id)),
        el("td", {}, child.runId), el("td", {}, child.component),
        el("td", {}, badge(child.status)), el("td", {}, duration(child.durationSeconds)))))));
  } catch (problem) {
    failed(problem, where);
  }
}

function renderTables(job, where) {
  const list = (title, mapped) => {
    const tables = (mapped && mapped.tables) || [];
    return el("div", { class: "mapped" }, el("h3", {}, title),
      tables.length === 0 ? el("p", { class: "muted" }, "None.")
        : el("ul", {}, tables.map((table) => el("li", {}, el("code", {}, table.id),
          table.columns && table.columns.length
            ? ` (${table.columns.map((c) => c.name).join(", ")})` : ""))));
  };
  const result = job.result || {};
  where.replaceChildren(el("div", { class: "columns", id: "input-tables" },
    list("Input", result.input)), el("div", { class: "columns", id: "output-tables" },
    list("Output", result.output)));
}

async function renderArchives(job, where) {
  let files;
  try {
    files = await api("v2/storage/files?tags[]=" + encodeURIComponent("jobId:" + job.id) +
      "&tags[]=debug&limit=1000");
  } catch (problem) {
    failed(problem, where);
    return;
  }
  if (files.length === 0) {
    where.replaceChildren(el("p", { class: "muted" }, job.mode === "debug"
      ? "None yet: a debug job stores an archive before each image and after the last."
      : "None: run the job in debug mode (mode \"debug\") to keep stage archives."));
    return;
  }
  const rowOf = (file) => {
    const tag = (file.tags || []).find((t) => t.startsWith("rowId:"));
    return tag ? tag.slice("rowId:".length) : "";
  };
  files.sort((a, b) => (rowOf(a) + " " + a.name)
    .localeCompare(rowOf(b) + " " + b.name, "en", { numeric: true }));
  const commands = [`jobq debug ${job.id}`];
  for (const file of files) {
    const stage = /^stage_(\d+)\.zip$/.exec(file.name);
    if (!stage) continue;
    const row = rowOf(file);
    commands.push(`jobq replay ${job.id} --stage ${stage[1]}` + (row ? ` --row ${row}` : ""));
  }
  where.replaceChildren(
    el("table", { class: "archives" },
      el("thead", {}, el("tr", {}, ["Archive", "Row", "Size"].map((h) => el("th", {}, h)))),
      el("tbody", {}, files.map((file) => el("tr", {},
        el("td", {}, el("a", { href: `api/v2/storage/files/${encodeURIComponent(file.id)}/download`,
          download: file.name }, file.name)),
        el("td", {}, rowOf(file) || "–"),
        el("td", {}, `${file.sizeBytes} B`))))),
    el("p", {}, "Unpack them, or replay a stage as the exact docker run of its image ",
      "(JOBQ_URL and JOBQ_TOKEN set):"),
    el("pre", { id: "replay" }, commands.join("\n")));
}

// The job's events (its tree's), live from the event stream until the job ends.
function followEvents(job, body, typeFilter, state, ended) {
  const all = [];
  const row = (event) => el("tr", { class: "event " + event.type, "data-event": event.id },
    el("td", {}, time(event.created)), el("td", {}, event.type), el("td", {}, event.runId),
    el("td", { class: "message" }, event.message));
  const visible = (event) => !typeFilter.value || event.type === typeFilter.value;
  typeFilter.addEventListener("change", () => {
    body.replaceChildren(...all.filter(visible).map(row));
  });
  const source = new EventSource(`api/jobs/${encodeURIComponent(job.id)}/events/stream?tree=1`);
  stops.push(() => source.close());
  state.textContent = "(live)";
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    all.push(event);
    if (visible(event)) body.append(row(event));
    // A long job's page keeps its newest events only.
    if (all.length > MAX_EVENTS) {
      const dropped = all.shift();
      const first = body.firstElementChild;
      if (first && first.dataset.event === dropped.id) first.remove();
      state.textContent = `(live; the newest ${MAX_EVENTS} events)`;
    }
  };
  source.addEventListener("end", () => {
    source.close();
    state.textContent = "(job ended)";
    ended();
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) state.textContent = "(stream closed)";
    else state.textContent = "(reconnecting)";
  };
}

// ---- the views ----

function stopView() {
  for (const stop of stops) stop();
  stops = [];
}

function route() {
  stopView();
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
  const job = /^\/jobs\/([^/]+)$/.exec(path);
  refreshStrip();
  every(STRIP_REFRESH_MS, refreshStrip);
  if (job) jobPage(decodeURIComponent(job[1]));
  else listPage();
}

async function start() {
  let token;
  try {
    token = await api("v2/storage/tokens/verify");
  } catch (error) {
    if (error instanceof Unauthorized) return login();
    throw error;
  }
  document.getElementById("strip").hidden = false;
  const who = document.getElementById("who");
  who.textContent = token.description;
  who.hidden = false;
  document.getElementById("logout").hidden = false;
  route();
}

window.addEventListener("hashchange", () => {
  if (document.getElementById("login")) return;
  route();
});
document.getElementById("logout").addEventListener("click", logout);
start();
