// jobgrove viewer: plain browser JavaScript, no build step.
// One websocket to this node: `watch` the selected tree, `subscribe` to the selected
// job's log. On reconnect both are re-sent, the log from the last byte received.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" +
  encodeURIComponent(token) : url;
const $ = (id) => document.getElementById(id);
const enc = new TextEncoder();
const FINISHED = ["SUCCESS", "FAILED", "ABORTED"];
const dec = new TextDecoder();

const view = {
  ws: null, treeId: null, jobId: null, tree: null, jobs: new Map(),
  logNext: 0, logEnded: false, keptNote: "", retry: 0, refetch: null,
};

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function duration(job) {
  if (!job.started) return "";
  const end = job.finished || Date.now() / 1000;
  const s = Math.max(0, end - job.started);
  if (s < 60) return s.toFixed(1) + "s";
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${Math.floor(s % 60)}s` : `${Math.floor(m / 60)}h${m % 60}m`;
}

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
  if (view.ws && view.ws.readyState === WebSocket.OPEN) view.ws.send(JSON.stringify(obj));
}

function setConn(text, cls) {
  const pill = $("conn");
  pill.textContent = text;
  pill.className = "pill " + (cls || "");
}

function handle(frame) {
  switch (frame.type) {
    case "tree": renderTree(frame.tree); break;
    case "status": updateJob(frame); break;
    case "done":
      if (frame.tree === view.treeId) $("tree-banner").textContent = `tree ${frame.state}`;
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
async function loadTrees() {
  const q = new URLSearchParams();
  for (const input of $("filters").querySelectorAll("input")) {
    if (input.value.trim()) q.set(input.name, input.value.trim());
  }
  q.set("limit", "50");
  try {
    const res = await fetch(withToken("/api/trees?" + q.toString()));
    const body = await res.json();
    if (!res.ok) throw new Error(body.message || res.statusText);
    renderTrees(body.trees);
  } catch (err) {
    const list = $("trees");
    list.replaceChildren(el("li", "error", "cannot list trees: " + err.message));
  }
}

function renderTrees(trees) {
  const list = $("trees");
  list.replaceChildren();
  for (const t of trees) {
    const li = el("li", t.id === view.treeId ? "selected" : "");
    li.dataset.id = t.id;
    const head = el("div", "job");
    head.append(el("span", "state " + t.state, t.state), el("span", "title", t.title || t.id));
    const tags = el("div", "tags");
    for (const [k, v] of Object.entries(t.tags || {})) tags.append(el("span", "tag", `${k}=${v}`));
    li.append(head, tags);
    li.onclick = () => selectTree(t.id);
    list.append(li);
  }
  if (!trees.length) list.append(el("li", "muted", "no trees match"));
}

// -- tree ------------------------------------------------------------------------------------
function selectTree(id) {
  if (view.treeId && view.treeId !== id) send({ type: "unwatch", tree: view.treeId });
  view.treeId = id;
  $("tree-banner").textContent = "";
  $("tree-banner").classList.remove("error");
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
  updateListState(status.id, status.state);
  view.jobs.clear();
  $("tree-title").textContent = status.title || status.id;
  $("tree-title").classList.remove("muted");
  const root = $("tree");
  root.replaceChildren(renderJob(status));
  if (["SUCCESS", "FAILED", "ABORTED"].includes(status.state)) {
    $("tree-banner").textContent = `tree ${status.state}`;
  }
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
  const summary = el("div", "summary", job.summary || "");
  li.append(row, summary);
  view.jobs.set(job.id, { data: job, row, state, dur, summary });
  if (job.children && job.children.length) {
    const ul = el("ul");
    for (const child of job.children) ul.append(renderJob(child));
    li.append(ul);
  }
  return li;
}

function updateListState(id, state) {
  const li = $("trees").querySelector(`li[data-id="${CSS.escape(id)}"] .state`);
  if (li) { li.textContent = state; li.className = "state " + state; }
}

function updateJob(frame) {
  updateListState(frame.job, frame.state);
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
  });
  entry.state.textContent = frame.state;
  entry.state.className = "state " + frame.state;
  entry.summary.textContent = frame.summary || "";
  entry.dur.textContent = duration(entry.data);
  if (frame.job === view.treeId && ["SUCCESS", "FAILED", "ABORTED"].includes(frame.state)) {
    $("tree-banner").textContent = `tree ${frame.state}`;
  }
}

setInterval(() => {
  for (const entry of view.jobs.values()) {
    if (entry.data.started && !entry.data.finished) entry.dur.textContent = duration(entry.data);
  }
}, 500);

// -- log -------------------------------------------------------------------------------------
function selectJob(id) {
  if (view.jobId === id) return;
  if (view.jobId && !view.logEnded) send({ type: "unsubscribe", job: view.jobId });
  view.jobId = id;
  view.logNext = 0;
  view.logEnded = false;
  view.keptNote = "";
  $("log").textContent = "";
  $("log-title").textContent = "log of " + ((view.jobs.get(id) || {}).data?.title || id);
  $("log-title").classList.remove("muted");
  $("log-status").textContent = "loading…";
  $("log-status").classList.remove("error");
  for (const entry of view.jobs.values()) entry.row.classList.toggle("selected", entry.data.id === id);
  send({ type: "subscribe", job: id, offset: 0 });
  updateHash();
}

function appendLog(frame) {
  if (frame.job !== view.jobId) return;
  let bytes = enc.encode(frame.data);
  const end = frame.offset + bytes.length;
  if (end <= view.logNext) return; // already shown (a frame sent before a reconnect)
  if (frame.offset < view.logNext) bytes = bytes.subarray(view.logNext - frame.offset);
  const pane = $("log");
  const stick = pane.parentElement.scrollTop + pane.parentElement.clientHeight >=
    pane.parentElement.scrollHeight - 20;
  pane.append(document.createTextNode(dec.decode(bytes)));
  view.logNext = end;
  if (stick) pane.parentElement.scrollTop = pane.parentElement.scrollHeight;
}

// -- start -----------------------------------------------------------------------------------
function updateHash() {
  const h = new URLSearchParams();
  if (view.treeId) h.set("tree", view.treeId);
  if (view.jobId) h.set("job", view.jobId);
  history.replaceState(null, "", location.pathname + location.search + "#" + h.toString());
}

// Tag filters may come in the page's URL too: /?workspace=acme&application=shop
for (const input of $("filters").querySelectorAll("input")) {
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
loadTrees();
setInterval(loadTrees, 5000);
