// The page: open or paste a graph, draw it, edit its params, run it and watch it run.
// State lives in one object passed around; the modules beside this one each do one part
// (api.js the server, graph.js the drawing, form.js the params, jobs.js the queue table).

import { ApiError, call, listen, withToken } from "./api.js";
import { drawGraph, drawLegend, resetStatuses, setNodeStatus } from "./graph.js";
import { applySet, buildForm, readSet } from "./form.js";
import { renderJobs, short } from "./jobs.js";

const $ = (id) => document.getElementById(id);
const NODE_STATUS = { node_started: "running", node_cached: "cached", node_finished: "done" };
const IMAGE = /\.(png|jpe?g|webp|gif)$/i;

const state = {
  graph: null, // the POST /api/inspect answer on display
  source: null, // what a job of the displayed graph sends: {graph}, {text} or {png_base64}
  served: new Set(), // names of the served folder's graphs
  watching: null, // the job whose progress the page shows
  events: new Map(), // job id -> its events seen so far (replayed when the page starts watching it)
  client: window.crypto?.randomUUID?.() ?? String(Math.random()).slice(2),
};

function say(text) {
  $("message").textContent = text;
}

function showErrors(error) {
  const list = $("errors");
  list.replaceChildren();
  if (!error) return;
  const records = error instanceof ApiError ? error.records : [{ message: String(error.message || error) }];
  for (const r of records) {
    const item = document.createElement("li");
    const where = [r.file, r.node && `node '${r.node}'`, r.field && `field '${r.field}'`].filter(Boolean);
    item.textContent = where.length ? `${where.join(", ")}: ${r.message}` : r.message;
    list.append(item);
  }
}

async function guarded(action) {
  try {
    showErrors(null);
    return await action();
  } catch (error) {
    showErrors(error);
    return undefined;
  }
}

// --- opening a graph -------------------------------------------------------------------------

async function loadServedList() {
  const graphs = await call("GET", "/api/graphs");
  state.served = new Set(graphs.map((g) => g.name));
  const select = $("graph-select");
  select.replaceChildren();
  for (const g of graphs) {
    const option = document.createElement("option");
    option.value = g.name;
    option.textContent = g.name;
    option.title = g.description || "";
    select.append(option);
  }
}

function showGraph(answer, source, label) {
  state.graph = answer;
  state.source = source;
  $("graph-title").textContent = label + (answer.format === "comfyui" ? " (imported from ComfyUI)" : "");
  $("graph-description").textContent = answer.description || "";
  drawLegend($("legend"), drawGraph($("graph"), answer));
  buildForm($("params"), answer.params);
  $("run").disabled = false;
}

async function openServed(name) {
  const file = await call("GET", `/api/graphs/${encodeURIComponent(name)}`);
  const answer = await call("POST", "/api/inspect", { text: file.text, name });
  showGraph(answer, { graph: name }, name);
}

async function openText(text, name) {
  const answer = await call("POST", "/api/inspect", name ? { text, name } : { text });
  showGraph(answer, { text: answer.format === "comfyui" ? answer.text : text }, name || "pasted graph");
}

async function openFile(file) {
  if (file.type === "image/png" || /\.png$/i.test(file.name)) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    const png = btoa(binary);
    const answer = await call("POST", "/api/inspect", { png_base64: png, name: file.name });
    showGraph(answer, { png_base64: png, name: file.name }, file.name);
  } else {
    await openText(await file.text(), file.name);
  }
}

function describeNode(target) {
  const group = target.closest?.("g.node");
  const node = group && state.graph?.nodes.find((n) => n.id === group.dataset.node);
  if (!node) return;
  const ports = (list) => list.map((p) => `${p.name}: ${p.type}${"value" in p ? ` = ${JSON.stringify(p.value)}` : ""}`)
    .join(", ") || "none";
  $("node-info").textContent =
    `${node.id} (${node.type}) — ${node.doc || "no description"} Inputs: ${ports(node.inputs)}. ` +
    `Outputs: ${ports(node.outputs)}.`;
}

// --- running and watching ----------------------------------------------------------------------

function resetProgress() {
  $("progress").value = 0;
  $("progress").max = 1;
  $("progress-label").textContent = "";
  $("preview").hidden = true;
}

function addImages(job, outputs) {
  for (const output of outputs || []) {
    if (!IMAGE.test(output.path || output.url)) continue;
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = withToken(output.url);
    img.alt = `${output.path} from node ${output.node}, job ${job}`;
    img.dataset.job = job;
    const caption = document.createElement("figcaption");
    caption.textContent = output.path;
    figure.append(img, caption);
    $("images").prepend(figure);
  }
}

function apply(message) {
  const status = NODE_STATUS[message.type];
  if (status) setNodeStatus($("graph"), message.node, status);
  switch (message.type) {
    case "job_started":
      say(`Job ${short(message.job)} running`);
      break;
    case "step":
      $("progress").max = message.total;
      $("progress").value = message.step;
      $("progress-label").textContent = `${message.node ? `${message.node}: ` : ""}step ${message.step}/${message.total}`;
      if (message.preview) {
        $("preview").src = message.preview;
        $("preview").hidden = false;
      }
      break;
    case "job_done":
      say(`Job ${short(message.job)} done`);
      addImages(message.job, message.outputs);
      break;
    case "job_failed":
      for (const r of message.errors || []) if (r.node) setNodeStatus($("graph"), r.node, "failed");
      say(`Job ${short(message.job)} failed`);
      showErrors(new ApiError(400, message.errors || []));
      break;
    case "job_cancelled":
      say(`Job ${short(message.job)} cancelled`);
      break;
    default:
  }
}

function watch(jobId) {
  state.watching = jobId;
  resetStatuses($("graph"));
  resetProgress();
  for (const message of state.events.get(jobId) || []) apply(message);
}

function onEvent(message) {
  if (!message.job) return;
  if (!state.events.has(message.job)) state.events.set(message.job, []);
  state.events.get(message.job).push(message);
  if (state.events.size > 50) state.events.delete(state.events.keys().next().value);
  if (message.job === state.watching) apply(message);
  if (message.type.startsWith("job_")) refreshJobs();
  if (message.type === "step") { // the queue table follows every running job's steps without a refetch
    const cell = document.querySelector(`#jobs tr[data-job="${CSS.escape(message.job)}"] .job-status`);
    if (cell) cell.textContent = `step ${message.step}/${message.total}`;
  }
}

async function submit(body) {
  const job = await call("POST", "/api/jobs", { ...body, client: state.client });
  say(`Job ${short(job.id)} queued at position ${job.position}`);
  watch(job.id);
  refreshJobs();
  return job;
}

async function run() {
  if (!state.graph) return;
  await submit({ ...state.source, set: readSet($("params"), state.graph.params) });
}

// --- queue and history -------------------------------------------------------------------------

let refreshTimer = null;
function refreshJobs() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => guarded(async () => {
    renderJobs($("jobs"), await call("GET", "/api/jobs"), actions);
  }), 100);
}

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("copied").textContent = text;
  say(`Copied ${what}`);
}

/** Open a job's graph with its values, and its statuses and images as the server recorded them. */
async function show(job) {
  if (job.graph && state.served.has(job.graph)) {
    await openServed(job.graph);
    applySet($("params"), state.graph.params, job.set || {});
  } else {
    await openText(job.yaml, `job ${short(job.id)}`);
  }
  watch(job.id);
  applyRecord(job);
}

/** Bring the display up to a job record (after a reconnect, or when showing an earlier job). */
function applyRecord(job) {
  for (const [node, status] of Object.entries(job.nodes || {})) setNodeStatus($("graph"), node, status);
  if (job.step) apply({ type: "step", job: job.id, node: "", step: job.step[0], total: job.step[1] });
  const shown = document.querySelector(`#images img[data-job="${CSS.escape(job.id)}"]`);
  if (job.status === "done" && !shown) addImages(job.id, job.outputs);
}

/** Events may have been missed while the WebSocket was down: re-read the watched job. */
async function resync() {
  if (state.watching) applyRecord(await call("GET", `/api/jobs/${encodeURIComponent(state.watching)}`));
}

const actions = {
  cancel: (job) => guarded(async () => {
    await call("DELETE", `/api/jobs/${job.id}`);
    refreshJobs();
  }),
  runNext: (job) => guarded(async () => {
    await call("POST", `/api/jobs/${job.id}/move`, { position: 0 });
    refreshJobs();
  }),
  show: (job) => guarded(() => show(job)),
  rerun: (job) => guarded(async () => {
    await show(job);
    await run();
  }),
  copy: (text, what) => guarded(() => copy(text, what)),
};

// --- wiring ------------------------------------------------------------------------------------

function wire() {
  $("open-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(() => openServed($("graph-select").value));
  });
  $("paste-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(() => openText($("paste").value));
  });
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) guarded(() => openFile(file));
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) guarded(() => openFile(file));
    else guarded(() => openText(e.dataTransfer.getData("text/plain")));
  });
  $("graph").addEventListener("focusin", (e) => describeNode(e.target));
  $("graph").addEventListener("click", (e) => describeNode(e.target));
  $("run-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(run);
  });
  listen(onEvent, (s) => {
    $("conn").textContent = s === "open" ? "live" : "reconnecting…";
    $("conn").dataset.state = s;
    if (s === "open") {
      refreshJobs();
      guarded(resync);
    }
  });
  guarded(loadServedList);
}

wire();
