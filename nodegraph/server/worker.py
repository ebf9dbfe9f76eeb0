"""The worker thread: takes jobs from the queue one at a time and runs them on the shared engine.

One engine for the server's life keeps models resident and the cache warm, so a job that changes
only the seed re-runs only noise -> sampler -> decode -> save. Each job writes into its own folder
`<out>/<job id>/`, all of its files or none (the engine stages them). A node that raises fails its
job, never the server.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodegraph.errors import NodegraphError
from nodegraph.runtime.context import Cancelled, RunOptions
from nodegraph.runtime.engine import Engine
from nodegraph.server.jobs import CANCELLED, DONE, FAILED, Job, JobQueue
from nodegraph.server.observer import JobObserver
from nodegraph.server.settings import ServeSettings
from nodegraph.server.sources import record, records_of

log = logging.getLogger("nodegraph.server")


class Worker:
    """Runs queued jobs on `engine`, publishing their events through `emit`."""

    def __init__(self, engine: Engine, queue: JobQueue, settings: ServeSettings,
                 emit: Callable[[dict[str, Any]], None]) -> None:
        self.engine = engine
        self.queue = queue
        self.settings = settings
        self.emit = emit
        self._thread = threading.Thread(target=self._loop, name="nodegraph-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> list[Job]:
        """Stop taking jobs, cancel the running one, wait for the thread; returns the jobs left."""
        left = self.queue.close()
        self._thread.join(timeout)
        return left

    def _loop(self) -> None:
        while not self.queue.closed:
            job = self.queue.next_job(timeout=1.0)
            if job is not None:
                self.run(job)

    def options(self, job: Job) -> RunOptions:
        s = self.settings
        return RunOptions(out_dir=s.out / job.id, device=s.device, dtype=s.dtype, allow_pickle=False,
                          model_dirs=s.models, show_progress=False)

    def run(self, job: Job) -> None:
        """Run one job to its end (done, failed or cancelled) and say so."""
        self.emit({"type": "job_started", "job": job.id})
        observer = JobObserver(job, self.emit)
        try:
            result = self.engine.run(job.plan, options=self.options(job), progress=observer,
                                     cancel=job.cancel)
        except Cancelled:
            self._end(job, observer, CANCELLED, [])
            return
        except NodegraphError as exc:
            self._end(job, observer, FAILED, records_of(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a crashing node fails its job, never the server
            log.error("job %s failed:\n%s", job.id, "".join(traceback.format_exception(exc)))
            node = observer.current
            message = f"{type(exc).__name__}: {exc}"
            problem = record(message)
            problem["node"] = node
            self._end(job, observer, FAILED, [problem])
            return
        out = self.settings.out
        outputs = []
        for path in result.written:
            rel = Path(path).relative_to(out).as_posix()
            outputs.append({"node": result.written_by.get(path), "url": f"/outputs/{rel}", "path": rel})
        job.outputs = outputs
        self.queue.done(job, DONE)
        self.emit({"type": "job_done", "job": job.id, "outputs": outputs,
                   "cached": result.cached, "executed": result.executed})

    def _end(self, job: Job, observer: JobObserver, status: str, errors: list[dict[str, Any]]) -> None:
        if observer.current is not None:
            job.nodes[observer.current] = "failed" if status == FAILED else "pending"
        failed_node = next((e.get("node") for e in errors if e.get("node")), None)
        if failed_node in job.nodes:
            job.nodes[failed_node] = "failed"
        job.errors = errors
        self.queue.done(job, status)
        if status == CANCELLED:
            self.emit({"type": "job_cancelled", "job": job.id})
        else:
            self.emit({"type": "job_failed", "job": job.id, "errors": errors})
