// jobgrove viewer: plain browser JavaScript, no build step.
// One websocket to this node: `watch` the selected tree, `subscribe` to the selected
// job's log, `abort` on request. On reconnect the watch and the log subscription are
// re-sent, the log from the last byte received.
//
// Deep links (documented in the README): /?workspace=acme&runs_on=n2&state=RUNNING
// fills the filters; #tree=ID&job=ID opens a tree and a job's log; ?token=... carries
// a viewer token for a cluster with a secret.
"use strict";

// The actions offered (each behind a confirmation; the node checks the token).
const ACTIONS = { abort: true, rerun: true };
const FINISHED = ["SUCCESS", "FAILED", "ABORTED"];
const STATES = ["NEW", "WAITING", "RUNNING", "SUCCESS", "FAILED", "ABORTED"];
// A log line a job wrote to stderr (after its timestamp).
const STDERR_LINE = /^\S+ \[stderr\] /;

const params = new URLSearchParams(location.search);
const token = params.get("token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" +
  encodeURIComponent(token) : url;
const $ = (id) => document.getElementById(id);
const enc = new TextEncoder();
const dec = new TextDecoder();

const view = {
  ws: null, treeId: null, jobId: null, tree: null, jobs: new Map(), nodes: new Map(),
  logNext: 0, logEnded: false, partial: "", partialNode: null, keptNote: "", retry: 0,
  refetch: null, confirmAction: null,
};

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function seconds(s) {
  if (s < 60) return s.toFixed(1) + "s";
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${Math.floor(s % 60)}s` : `${Math.floor(m / 60)}h${m % 60}m`;
}

function duration(job) {
  if (!job.started) return "";
  return seconds(Math.max(0, (job.finished || Date.now() / 1000) - job.started));
}

function countsText(counts) {
  const rest = STATES.filter((s) => s !== "SUCCESS" && counts[s])
    .map((s) => `${counts[s]} ${s.toLowerCase()}`);
  return [`${counts.SUCCESS || 0}/${counts.total || 0} ok`, ...rest].join(", ");
}

function short(id) { return id ? id.slice(0, 8) : ""; }

// -- connection ------------------------------------------------------------------------
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(withToken(`${proto}//${location.host}/ws`));
  view.ws = ws;
  ws.onopen = () => {
    view.retry = 0;
    setConn("live", "up");
    if (view.treeId) send({ type: "watch", tree: view.treeId });
    if (view.jobId && !view.logEnded) {
      send({ type: "subscribe", job: view.jobId, offset: view.logNext });
    }
  };
  ws.onmessage = (ev) => {
    let frame;
    try { frame = JSON.parse(ev.data); } catch (_) { return; }
    handle(frame);
  };
  ws.onclose = () => {
    setConn("disconnected: retrying", "down");
    view.retry = Math.min(view.retry + 1, 6);
    setTimeout(connect, 200 * 2 ** view.retry);
  };
}

function send(obj) {
  if (view.ws && view.ws.readyState === WebSocket.OPEN) {
    view.ws.send(JSON.stringify(obj));
    return true;
  }
  return false;
}

function setConn(text, cls) {
  const pill = $("conn");
  pill.textContent = text;
  pill.className = "pill " + (cls || "");
}

function banner(text, error) {
  $("tree-banner").textContent = text;
  $("tree-banner").classList.toggle("error", !!error);
}

function handle(frame) {
  switch (frame.type) {
    case "tree": renderTree(frame.tree); break;
    case "status": updateJob(frame); break;
    case "progress": updateProgress(frame); break;
    case "rerun":
      if (frame.tree === view.treeId) banner(`tree running again (run ${frame.run})`);
      break;
    case "done":
      if (frame.tree === view.treeId) banner(`tree ${frame.state}`);
      break;
    case "log": appendLog(frame); break;
    case "live":
      if (frame.job === view.jobId) $("log-status").textContent = "following live";
      break;
    case "end":
      if (frame.job === view.jobId) {
        view.logEnded = true;
        $("log-status").textContent = `log complete: job ${frame.state}, ${frame.offset} bytes` +
          (view.keptNote ? ` (${view.keptNote})` : "");
      }
      break;
    case "kept":
      // The job's node is gone: this is the end of its log that the node stored.
      if (frame.job === view.jobId) {
        view.keptNote = frame.message;
        $("log-status").textContent = frame.message;
        if (frame.missing > 0) {
          $("log").append(el("span", "cut", `[… ${frame.missing} bytes not kept …]\n`));
        }
        view.logNext = Math.max(view.logNext, frame.offset);
      }
      break;
    case "aborted": {
      const title = jobTitle(frame.job);
      banner(frame.verdict === "ok" ? `abort requested: ${title} is ${frame.state}; ` +
        "the tree is aborting" : `${title} had already finished (${frame.state})`);
      break;
    }
    case "error": {
      const mine = frame.job && frame.job === view.jobId;
      const target = mine ? "log-status" : "tree-banner";
      $(target).textContent = `${frame.code}: ${frame.message}`;
      $(target).classList.add("error");
      if (mine) {
        // An error ends the subscription. A job still running (its node unreachable
        // for now) is asked for again a little later.
        view.logEnded = true;
        const job = view.jobs.get(frame.job);
        if (frame.code === "unavailable" && job && !FINISHED.includes(job.data.state)) {
          setTimeout(() => {
            if (view.jobId !== frame.job || !view.logEnded) return;
            view.logEnded = false;
            $("log-status").classList.remove("error");
            send({ type: "subscribe", job: frame.job, offset: view.logNext });
          }, 3000);
        }
      }
      break;
    }
  }
}

// -- trees list ----------------------------------------------------------------------------
function filterQuery() {
  const q = new URLSearchParams();
  for (const input of $("filters").querySelectorAll("input, select")) {
    if (input.value.trim()) q.set(input.name, input.value.trim());
  }
  return q;
}

async function loadTrees() {
  const q = filterQuery();
  q.set("limit", "50");
  try {
    const res = await fetch(withToken("/api/trees?" + q.toString()));
    const body = await res.json();
    if (!res.ok) throw new Error(body.message || res.statusText);
    renderTrees(body.trees);
  } catch (err) {
    $("trees").replaceChildren(el("li", "error", "cannot list trees: " + err.message));
  }
}

async function loadNodes() {
  try {
    const res = await fetch(withToken("/api/nodes"));
    if (!res.ok) return;
    view.nodes = new Map((await res.json()).map((n) => [n.name, n]));
    for (const entry of view.jobs.values()) renderSummary(entry);
  } catch (_) { /* the next refresh retries */ }
}

function waitingText(waitingFor) {
  return Object.entries(waitingFor || {})
    .map(([node, why]) => `waiting for node ${node} (${why})`).join("; ");
}

function renderTrees(trees) {
  const list = $("trees");
  list.replaceChildren();
  for (const t of trees) {
    const li = el("li", t.id === view.treeId ? "selected" : "");
    li.dataset.id = t.id;
    const head = el("div", "job");
    head.append(el("span", "state " + t.tree_state, t.tree_state),
      el("span", "title", t.title || t.id));
    const facts = el("div", "facts");
    facts.append(el("span", "counts", countsText(t.counts)),
      el("span", "dur", t.duration == null ? "" : seconds(t.duration)));
    const tags = el("div", "tags");
    for (const [k, v] of Object.entries(t.tags || {})) tags.append(el("span", "tag", `${k}=${v}`));
    li.append(head, facts, tags);
    const waiting = waitingText(t.waiting_for);
    if (waiting) li.append(el("div", "note", waiting));
    li.onclick = () => selectTree(t.id);
    list.append(li);
  }
  if (!trees.length) list.append(el("li", "muted", "no trees match"));
  if (view.tree) refreshListEntry();
}

// The selected tree's entry in the list, from the live tree (no need to wait for the
// next listing): its state derived from all jobs, and its counts.
function refreshListEntry() {
  const li = $("trees").querySelector(`li[data-id="${CSS.escape(view.treeId)}"]`);
  if (!li) return;
  const counts = { total: 0 };
  for (const entry of view.jobs.values()) {
    counts.total += 1;
    counts[entry.data.state] = (counts[entry.data.state] || 0) + 1;
  }
  const root = view.jobs.get(view.treeId);
  if (!root) return;
  let state = root.data.state;
  if (counts.RUNNING) state = "RUNNING";
  else if (!FINISHED.includes(state) && counts.WAITING) state = "WAITING";
  const pill = li.querySelector(".state");
  pill.textContent = state;
  pill.className = "state " + state;
  li.querySelector(".counts").textContent = countsText(counts);
}

// -- tree ------------------------------------------------------------------------------------
function selectTree(id) {
  if (view.treeId && view.treeId !== id) send({ type: "unwatch", tree: view.treeId });
  view.treeId = id;
  banner("");
  for (const li of $("trees").children) li.classList.toggle("selected", li.dataset.id === id);
  send({ type: "watch", tree: id });
  updateHash();
}

function renderTree(status) {
  // A late frame of a tree no longer selected is ignored; a tree watched by the id of
  // any of its jobs is adopted under its root id.
  if (status.id !== view.treeId && !contains(status, view.treeId)) return;
  view.treeId = status.id;
  view.tree = status;
  view.jobs.clear();
  $("tree-title").textContent = status.title || status.id;
  $("tree-title").classList.remove("muted");
  $("tree").replaceChildren(renderJob(status));
  if (FINISHED.includes(status.state)) banner(`tree ${status.state}`);
  refreshListEntry();
  refreshActions();
  updateHash();
}

function contains(job, id) {
  const stack = [job];
  while (stack.length) {
    const item = stack.pop();
    if (item.id === id) return true;
    stack.push(...(item.children || []));
  }
  return false;
}

function renderJob(job) {
  const li = el("li");
  const row = el("div", "job" + (job.id === view.jobId ? " selected" : ""));
  row.dataset.id = job.id;
  const state = el("span", "state " + job.state, job.state);
  const dur = el("span", "dur", duration(job));
  row.append(state, el("span", "title", job.title || job.kind), el("span", "node", job.node), dur);
  row.onclick = () => selectJob(job.id);
  const summary = el("div", "summary");
  li.append(row, summary);
  const entry = { data: job, row, state, dur, summary };
  view.jobs.set(job.id, entry);
  renderSummary(entry);
  if (job.children && job.children.length) {
    const ul = el("ul");
    for (const child of job.children) ul.append(renderJob(child));
    li.append(ul);
  }
  return li;
}

function updateProgress(frame) {
  const entry = view.jobs.get(frame.job);
  if (!entry) return;
  entry.data.progress = frame.progress;
  renderSummary(entry);
}

function jobTitle(id) {
  const entry = view.jobs.get(id);
  return entry ? (entry.data.title || entry.data.kind) : short(id);
}

// Under each job: its summary; for an aborted job, the job whose failure or abort
// stopped the tree (a link to it); for a waiting job, a node that is not up.
function renderSummary(entry) {
  const job = entry.data;
  const box = entry.summary;
  box.replaceChildren();
  if (job.attempt > 1) box.append(el("span", "attempt", `attempt ${job.attempt}`));
  const progress = job.progress;
  if (job.state === "RUNNING" && progress && typeof progress.fraction === "number") {
    const bar = el("progress", "progress");
    bar.max = 1;
    bar.value = progress.fraction;
    box.append(bar, el("span", "progress-text",
      `${Math.round(progress.fraction * 100)}%${progress.message ? " " + progress.message : ""}`));
  }
  if (job.summary) box.append(el("span", "", job.summary));
  if (job.state === "ABORTED" && job.cause) {
    const cause = el("span", "cause");
    if (job.cause === job.id) {
      cause.textContent = "cause: this job (aborted by a user)";
    } else {
      const link = el("a", "", jobTitle(job.cause) + " " + short(job.cause));
      link.href = "#";
      link.onclick = (ev) => { ev.preventDefault(); ev.stopPropagation(); selectJob(job.cause); };
      cause.append("cause: ", link);
    }
    box.append(cause);
  }
  if (job.state === "WAITING") {
    const node = view.nodes.get(job.node);
    const why = node ? node.state : (view.nodes.size ? "not registered" : null);
    if (why && why !== "up") box.append(el("span", "note", `waiting for node ${job.node} (${why})`));
  }
}

function updateJob(frame) {
  const entry = view.jobs.get(frame.job);
  if (!entry) {
    // A job added after the snapshot: fetch the tree again (debounced).
    clearTimeout(view.refetch);
    view.refetch = setTimeout(() => send({ type: "watch", tree: view.treeId }), 200);
    return;
  }
  Object.assign(entry.data, {
    state: frame.state, summary: frame.summary, cause: frame.cause,
    started: frame.started ?? entry.data.started, finished: frame.finished ?? entry.data.finished,
    attempt: frame.attempt ?? entry.data.attempt,
    progress: frame.state === "RUNNING" ? entry.data.progress : null,
  });
  entry.state.textContent = frame.state;
  entry.state.className = "state " + frame.state;
  entry.dur.textContent = duration(entry.data);
  renderSummary(entry);
  if (frame.job === view.treeId && FINISHED.includes(frame.state)) banner(`tree ${frame.state}`);
  refreshListEntry();
  refreshActions();
}

setInterval(() => {
  for (const entry of view.jobs.values()) {
    if (entry.data.started && !entry.data.finished) entry.dur.textContent = duration(entry.data);
  }
}, 500);

// -- actions ---------------------------------------------------------------------------------
function refreshActions() {
  const job = view.jobs.get(view.jobId);
  const root = view.jobs.get(view.treeId);
  $("abort-job").hidden = !(ACTIONS.abort && job && !FINISHED.includes(job.data.state));
  $("abort-tree").hidden = !(ACTIONS.abort && root && !FINISHED.includes(root.data.state));
  const done = root && FINISHED.includes(root.data.state) &&
    ![...view.jobs.values()].some((e) => e.data.state === "RUNNING");
  $("rerun").hidden = !(ACTIONS.rerun && done && root.data.state !== "SUCCESS");
  if (job) {
    $("log-title").textContent = `${job.data.title || job.data.kind} · ${job.data.state} · ` +
      `on ${job.data.node}`;
  }
}

// Nothing is sent before the user confirms in the bar at the top of the page.
function confirmAction(text, yesLabel, action) {
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = yesLabel;
  view.confirmAction = action;
  $("confirm").hidden = false;
  $("confirm-no").focus();
}

function closeConfirm() {
  $("confirm").hidden = true;
  view.confirmAction = null;
}

$("confirm-yes").onclick = () => {
  const action = view.confirmAction;
  closeConfirm();
  if (action && !action()) banner("not connected: nothing was sent", true);
};
$("confirm-no").onclick = closeConfirm;
$("abort-job").onclick = () => {
  const id = view.jobId;
  confirmAction(`Abort job "${jobTitle(id)}" (${short(id)})? Its whole tree stops, as if ` +
    "this job had failed.", "Abort", () => send({ type: "abort", job: id }));
};
$("abort-tree").onclick = () => {
  const id = view.treeId;
  confirmAction(`Abort tree "${jobTitle(id)}" (${short(id)})? Every running job is stopped ` +
    "and nothing else starts.", "Abort tree", () => send({ type: "abort", job: id }));
};
$("rerun").onclick = () => {
  const id = view.treeId;
  confirmAction(`Rerun what did not succeed in tree "${jobTitle(id)}"?`, "Rerun",
    () => send({ type: "rerun", job: id }));
};

// -- log -------------------------------------------------------------------------------------
function selectJob(id) {
  if (view.jobId === id) return;
  if (view.jobId && !view.logEnded) send({ type: "unsubscribe", job: view.jobId });
  view.jobId = id;
  view.logNext = 0;
  view.logEnded = false;
  view.partial = "";
  view.partialNode = null;
  view.keptNote = "";
  $("log").textContent = "";
  $("log-title").textContent = "log of " + jobTitle(id);
  $("log-title").classList.remove("muted");
  $("log-status").textContent = "loading…";
  $("log-status").classList.remove("error");
  for (const entry of view.jobs.values()) entry.row.classList.toggle("selected", entry.data.id === id);
  refreshActions();
  send({ type: "subscribe", job: id, offset: 0 });
  updateHash();
}

function lineNode(text) {
  if (!STDERR_LINE.test(text)) return document.createTextNode(text);
  return el("span", "stderr", text);
}

// Lines are appended whole (a stderr line gets its own style); the unfinished last
// line is shown as it is and replaced once the rest of it arrives.
function appendText(text) {
  const pane = $("log");
  if (view.partialNode) view.partialNode.remove();
  const parts = (view.partial + text).split("\n");
  view.partial = parts.pop();
  for (const line of parts) pane.append(lineNode(line + "\n"));
  view.partialNode = view.partial ? lineNode(view.partial) : null;
  if (view.partialNode) pane.append(view.partialNode);
}

function appendLog(frame) {
  if (frame.job !== view.jobId) return;
  let bytes = enc.encode(frame.data);
  const end = frame.offset + bytes.length;
  if (end <= view.logNext) return; // already shown (a frame sent before a reconnect)
  if (frame.offset < view.logNext) bytes = bytes.subarray(view.logNext - frame.offset);
  const box = $("log").parentElement;
  const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 20;
  appendText(dec.decode(bytes));
  view.logNext = end;
  if (stick) box.scrollTop = box.scrollHeight;
}

// -- start -----------------------------------------------------------------------------------
function updateHash() {
  const h = new URLSearchParams();
  if (view.treeId) h.set("tree", view.treeId);
  if (view.jobId) h.set("job", view.jobId);
  history.replaceState(null, "", location.pathname + location.search + "#" + h.toString());
}

// Filters may come in the page's URL too: /?workspace=acme&application=shop&state=RUNNING
for (const input of $("filters").querySelectorAll("input, select")) {
  if (params.get(input.name)) input.value = params.get(input.name);
}
$("filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadTrees(); });
fetch(withToken("/health")).then((r) => r.json()).then((h) => {
  $("node").textContent = `node ${h.node} · redis ${h.redis}`;
}).catch(() => {});

const initial = new URLSearchParams(location.hash.slice(1));
if (initial.get("tree")) view.treeId = initial.get("tree");
connect();
if (initial.get("job")) selectJob(initial.get("job"));
loadNodes();
loadTrees();
setInterval(() => { loadTrees(); loadNodes(); }, 5000);
