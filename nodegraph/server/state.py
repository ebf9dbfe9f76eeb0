"""The server's long-lived state, one object per app: settings, engine, queue, events, worker.

Routes reach it as `request.app.state.server`. Submitting a job (from either API) goes through
`submit`, so validation, the queue bound and the `job_queued` event are the same for both.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodegraph.cli.import_cmd import to_yaml
from nodegraph.document.plan import Plan
from nodegraph.runtime.engine import Engine
from nodegraph.runtime.report import write_json_atomic
from nodegraph.server.events import EventHub, Subscribers
from nodegraph.server.jobs import FAILED, Job, JobQueue, now
from nodegraph.server.settings import ServeSettings
from nodegraph.server.sources import GraphSources, Loaded, cli_text
from nodegraph.server.worker import Worker

log = logging.getLogger("nodegraph.server")
STATE_FILE = ".nodegraph-serve-jobs.json"  # in --out: the jobs not yet finished, to report after a crash


class ServerState:
    """Everything the routes share."""

    def __init__(self, settings: ServeSettings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or Engine(cache_mb=settings.cache_mb)
        self.registry = self.engine.registry  # built now, not on the first request
        self.sources = GraphSources(self.registry, settings)
        self.queue = JobQueue(settings.queue_size, settings.history)
        self.hub = EventHub()
        self.native = Subscribers()
        self.worker = Worker(self.engine, self.queue, settings, self.hub.publish)
        self.hub.listen(self._on_event)
        self.lost = self._lost_jobs()

    # -- jobs -------------------------------------------------------------------------------------
    def make_job(self, loaded: Loaded, plan: Plan, overrides: Mapping[str, Any], client: str | None,
                 comfy: dict[str, Any] | None = None) -> Job:
        """A job for a validated plan (not queued yet)."""
        resolved = plan.resolved if isinstance(plan.resolved, dict) else {}
        yaml_text = to_yaml(resolved) if "version" in resolved else ""
        target = loaded.graph or loaded.name
        parts = ["nodegraph", "run", str(Path(self.settings.graphs) / target) if loaded.graph else target]
        for key, value in overrides.items():
            parts += ["--set", f"{key}={cli_text(value)}"]
        return Job(plan=plan, graph=loaded.graph, overrides=dict(overrides), yaml=yaml_text,
                   cli=shlex.join(parts), client=client, comfy=comfy)

    def submit(self, jobs: list[Job]) -> list[int]:
        """Queue `jobs` (all or none: `QueueFull`), say so, and remember them for a crash report."""
        positions = self.queue.submit(jobs)
        for job, position in zip(jobs, positions, strict=True):
            self.hub.publish({"type": "job_queued", "job": job.id, "position": position})
        return positions

    def _on_event(self, event: dict[str, Any]) -> None:
        """Native events go to every native WebSocket client; queue changes rewrite the state file."""
        self.native.send(event)
        if event["type"] in ("job_queued", "job_done", "job_failed", "job_cancelled", "job_started"):
            self._save_unfinished()

    # -- restart report ---------------------------------------------------------------------------
    def _save_unfinished(self) -> None:
        running, pending = self.queue.counts()
        rows = [{"id": j.id, "graph": j.graph, "submitted": j.submitted, "status": j.status}
                for j in ([running] if running else []) + pending]
        try:
            write_json_atomic(self.settings.out / STATE_FILE, rows)
        except OSError as exc:
            log.warning("cannot write %s: %s", STATE_FILE, exc)

    def _lost_jobs(self) -> list[dict[str, Any]]:
        """Jobs a previous server left queued or running (it stopped before running them)."""
        path = self.settings.out / STATE_FILE
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [r for r in rows if isinstance(r, dict) and "id" in r] if isinstance(rows, list) else []

    def lost_records(self) -> list[dict[str, Any]]:
        """The lost jobs as finished job records (the native job list shows them as failed)."""
        message = "lost: the previous server stopped before this job finished (jobs live in memory)"
        return [{"id": r["id"], "status": FAILED, "position": None, "graph": r.get("graph"), "set": {},
                 "client": None, "submitted": r.get("submitted"), "started": None, "finished": now(),
                 "nodes": {}, "step": None, "outputs": [], "yaml": "", "cli": "",
                 "errors": [{"file": None, "line": None, "node": None, "field": None, "message": message}]}
                for r in self.lost]

    def start(self) -> None:
        self.worker.start()
        self._save_unfinished()

    def stop(self) -> list[Job]:
        left = self.worker.stop()
        self._save_unfinished_of(left)
        return left

    def _save_unfinished_of(self, jobs: list[Job]) -> None:
        rows = [{"id": j.id, "graph": j.graph, "submitted": j.submitted, "status": j.status} for j in jobs]
        try:
            write_json_atomic(self.settings.out / STATE_FILE, rows)
        except OSError as exc:
            log.warning("cannot write %s: %s", STATE_FILE, exc)
