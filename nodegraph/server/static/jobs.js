// The queue and history table (GET /api/jobs): one row per job with its status and the actions that
// fit it — re-run, cancel, run next, copy as YAML, copy as CLI command.

function button(text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  row.append(td);
  return td;
}

/** A job id as shown: its first 8 characters (the full id is in the row's title). */
export function short(id) {
  return String(id).slice(0, 8);
}

function describeSet(set) {
  const entries = Object.entries(set || {});
  return entries.length ? entries.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ") : "defaults";
}

function progressOf(job) {
  if (job.status === "queued") return `#${(job.position ?? 0) + 1} in queue`;
  if (job.status === "running" && job.step) return `step ${job.step[0]}/${job.step[1]}`;
  return job.status;
}

/**
 * Render `jobs` into `tbody` in the server's order (the queue in the order it will run, then the
 * running job, then the finished ones, newest first). `actions` has rerun(job), cancel(job),
 * runNext(job), copy(text, what) and show(job).
 */
export function renderJobs(tbody, jobs, actions) {
  tbody.replaceChildren();
  for (const job of jobs) {
    const row = document.createElement("tr");
    row.dataset.job = job.id;
    row.dataset.status = job.status;
    cell(row, short(job.id)).title = job.id;
    cell(row, job.graph || "(pasted)");
    cell(row, describeSet(job.set));
    const status = cell(row, progressOf(job));
    status.className = `job-status status-${job.status}`;
    const tools = document.createElement("div");
    tools.className = "tools";
    const name = `job ${short(job.id)}`;
    if (job.status === "queued" || job.status === "running") {
      tools.append(button("Cancel", `Cancel ${name}`, () => actions.cancel(job)));
    }
    if (job.status === "queued" && job.position > 0) {
      tools.append(button("Run next", `Run ${name} next`, () => actions.runNext(job)));
    }
    tools.append(
      button("Show", `Show ${name}`, () => actions.show(job)),
      button("Re-run", `Re-run ${name}`, () => actions.rerun(job)),
      button("Copy YAML", `Copy ${name} as YAML`, () => actions.copy(job.yaml, "YAML")),
      button("Copy CLI", `Copy ${name} as CLI command`, () => actions.copy(job.cli, "CLI command")),
    );
    cell(row, tools);
    tbody.append(row);
  }
}
