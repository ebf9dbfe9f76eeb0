"""The job queue: bounded, ordered, thread-safe; jobs live in memory only (see docs/server.md).

Request handlers submit, list, move and cancel; the worker thread takes the next job and reports
what happens to it. One lock guards everything; `next_job` waits on a condition so the worker sleeps
while the queue is empty.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nodegraph.document.plan import Plan

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class QueueFull(Exception):
    """The queue holds `limit` jobs already (the route answers 429)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"queue full ({limit} jobs)")


class JobStateError(Exception):
    """A move or cancel that the job's state does not allow (the route answers 409)."""


def now() -> str:
    """The current time as ISO 8601 UTC, as the job records carry it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Job:
    """One submitted graph run and what has happened to it so far."""

    plan: Plan
    graph: str | None  # name in the graphs folder, when submitted by name
    overrides: dict[str, str]  # `--set`-style texts applied to the plan
    yaml: str  # the graph with the overrides applied
    cli: str  # the equivalent `nodegraph run` command
    client: str | None = None
    comfy: dict[str, Any] | None = None  # ComfyUI-side facts: prompt, number, extra_data, node ids
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = QUEUED
    submitted: str = field(default_factory=now)
    started: str | None = None
    finished: str | None = None
    nodes: dict[str, str] = field(default_factory=dict)
    step: tuple[int, int] | None = None
    outputs: list[dict[str, str | None]] = field(default_factory=list)  # {node, url, path}
    errors: list[dict[str, Any]] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes = {node_id: "pending" for node_id in self.plan.nodes}

    def as_json(self, position: int | None) -> dict[str, Any]:
        """The job as the native API shows it (docs/server_api.md)."""
        return {
            "id": self.id, "status": self.status, "position": position, "graph": self.graph,
            "set": dict(self.overrides), "client": self.client, "submitted": self.submitted,
            "started": self.started, "finished": self.finished, "nodes": dict(self.nodes),
            "step": list(self.step) if self.step else None, "outputs": list(self.outputs),
            "errors": list(self.errors), "yaml": self.yaml, "cli": self.cli,
        }


class JobQueue:
    """Queued jobs in run order, the running one, and the finished ones (newest last, bounded)."""

    def __init__(self, limit: int, history: int = 1000) -> None:
        self.limit = limit
        self.history = history
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._pending: list[Job] = []
        self._running: Job | None = None
        self._finished: OrderedDict[str, Job] = OrderedDict()
        self._closed = False

    # -- request handlers -------------------------------------------------------------------------
    def submit(self, jobs: list[Job]) -> list[int]:
        """Queue all of `jobs` or none (`QueueFull`); returns their positions (0 = next to run)."""
        with self._lock:
            if len(self._pending) + len(jobs) > self.limit:
                raise QueueFull(self.limit)
            start = len(self._pending)
            self._pending.extend(jobs)
            self._ready.notify()
            return list(range(start, start + len(jobs)))

    def get(self, job_id: str) -> tuple[Job, int | None] | None:
        """(job, its queue position or None) for a known id."""
        with self._lock:
            return self._find(job_id)

    def snapshot(self) -> list[tuple[Job, int | None]]:
        """Queued jobs in order, then the running one, then finished ones newest first."""
        with self._lock:
            rows: list[tuple[Job, int | None]] = [(job, i) for i, job in enumerate(self._pending)]
            if self._running is not None:
                rows.append((self._running, None))
            rows += [(job, None) for job in reversed(self._finished.values())]
            return rows

    def counts(self) -> tuple[Job | None, list[Job]]:
        """(the running job, the queued ones in order)."""
        with self._lock:
            return self._running, list(self._pending)

    def finished(self) -> list[Job]:
        """Finished jobs, oldest first."""
        with self._lock:
            return list(self._finished.values())

    def move(self, job_id: str, position: int) -> int:
        """Move a queued job to `position` (clamped into the queue); returns where it is now."""
        with self._lock:
            for i, job in enumerate(self._pending):
                if job.id == job_id:
                    self._pending.pop(i)
                    where = max(0, min(position, len(self._pending)))
                    self._pending.insert(where, job)
                    return where
            if self._find(job_id) is None:
                raise KeyError(job_id)
            raise JobStateError(f"job {job_id} is not queued; only queued jobs can be moved")

    def cancel(self, job_id: str) -> Job:
        """Drop a queued job (it is finished as cancelled now) or ask the running one to stop."""
        with self._lock:
            for i, job in enumerate(self._pending):
                if job.id == job_id:
                    self._pending.pop(i)
                    job.status, job.finished = CANCELLED, now()
                    self._remember(job)
                    return job
            if self._running is not None and self._running.id == job_id:
                self._running.cancel.set()
                return self._running
            if job_id in self._finished:
                raise JobStateError(f"job {job_id} has finished ({self._finished[job_id].status})")
            raise KeyError(job_id)

    def clear(self) -> list[Job]:
        """Cancel every queued job (ComfyUI's `POST /queue {"clear": true}`); returns them."""
        with self._lock:
            dropped, self._pending = self._pending, []
            for job in dropped:
                job.status, job.finished = CANCELLED, now()
                self._remember(job)
            return dropped

    # -- the worker -------------------------------------------------------------------------------
    def next_job(self, timeout: float | None = None) -> Job | None:
        """Wait for the next queued job and mark it running; None when closed or timed out."""
        with self._ready:
            if not self._pending and not self._closed:
                self._ready.wait(timeout)
            if self._closed or not self._pending:
                return None
            job = self._pending.pop(0)
            job.status, job.started = RUNNING, now()
            self._running = job
            return job

    def done(self, job: Job, status: str) -> None:
        """Record the running job's end."""
        with self._lock:
            job.status, job.finished, job.step = status, now(), None
            if self._running is job:
                self._running = None
            self._remember(job)

    def close(self) -> list[Job]:
        """Stop handing out jobs (server shutdown); returns those still queued or running."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            left = list(self._pending)
            if self._running is not None:
                self._running.cancel.set()
                left.insert(0, self._running)
            return left

    @property
    def closed(self) -> bool:
        return self._closed

    # -- helpers (lock held) ----------------------------------------------------------------------
    def _find(self, job_id: str) -> tuple[Job, int | None] | None:
        for i, job in enumerate(self._pending):
            if job.id == job_id:
                return job, i
        if self._running is not None and self._running.id == job_id:
            return self._running, None
        if job_id in self._finished:
            return self._finished[job_id], None
        return None

    def _remember(self, job: Job) -> None:
        self._finished[job.id] = job
        while len(self._finished) > self.history:
            self._finished.popitem(last=False)
