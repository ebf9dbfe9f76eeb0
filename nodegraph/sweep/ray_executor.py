"""Spread a sweep over Ray: one long-lived actor per GPU (or per CPU slot), variants handed out as
workers free up, dead workers' variants retried on the others.

Ray is an optional extra (`pip install 'nodegraph[ray]'`). With no address a private Ray instance is
started bound to 127.0.0.1 only (Ray otherwise listens on the host's network address); with one, the
sweep joins that cluster (`ray start --head` on one machine, `ray start --address=HEAD:6379` on the
others; see docs/sweeps.md). Each actor is a `SweepWorker`: an engine whose models stay resident and
whose cache serves later variants, so variants do not reload models. Results come back to the driver,
which writes them (atomically, once per variant) — nothing a dying worker did can leave a half file.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from nodegraph.errors import NodegraphError
from nodegraph.runtime.context import RunOptions
from nodegraph.sweep.runner import OnDone
from nodegraph.sweep.worker import SweepWorker, VariantJob

INSTALL_HINT = "pip install 'nodegraph[ray]'"


def import_ray() -> ModuleType:
    """The `ray` module, or a user error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise NodegraphError(f"--executor ray needs Ray, which is not installed ({INSTALL_HINT})") from None
    return ray


@contextmanager
def _loopback_only(ray: ModuleType) -> Iterator[None]:
    """Make Ray resolve "this node" to 127.0.0.1 while it starts, as it does on macOS and Windows.

    Ray maps a 127.0.0.1 node address to the host's routable address on Linux, and its servers then
    listen there; with the cluster switch off they bind to loopback only. Restored once started.
    """
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is None or not hasattr(constants, "ENABLE_RAY_CLUSTER"):
        yield
        return
    old = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = old


def start_local_ray(num_cpus: int | None = None) -> ModuleType:
    """Start a private Ray instance on loopback (no dashboard, worker logs not echoed); `address="local"`
    so a `$RAY_ADDRESS` in the environment cannot send it to some other cluster."""
    ray = import_ray()
    with _loopback_only(ray):
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=num_cpus,
                 log_to_driver=False, configure_logging=False)
    return ray


@contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """Use the Ray this process already joined, else join `address`, else start a loopback instance;
    shut down only what this call started."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        if address:
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except ConnectionError as exc:
                raise NodegraphError(f"cannot join the Ray cluster at '{address}': {exc}") from None
        else:
            start_local_ray(num_cpus)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def default_workers(ray: ModuleType) -> tuple[int, bool]:
    """(number of workers, on GPUs?): one per GPU in the cluster, else one per CPU slot."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, True
    return max(1, int(resources.get("CPU", 1))), False


class RayExecutor:
    """Runs variants on Ray actors; call inside `ray_session`. `workers` exposes the live actors."""

    def __init__(self, options: RunOptions, packs: tuple[str, ...] | None = None,
                 workers: int | None = None, cache_mb: float = 2048) -> None:
        self.ray = import_ray()
        self.options = options
        self.packs = packs
        self.requested = workers
        self.cache_mb = cache_mb
        self.workers: list[Any] = []
        self.labels: list[str] = []  # host:pid of each worker, as in the manifest's "worker"
        self.retried = 0  # variants re-queued because their worker died

    def start(self) -> None:
        """Start the actors and wait until each has built its engine."""
        ray = self.ray
        count, on_gpu = default_workers(ray)
        count = self.requested or count
        resources = {"num_gpus": 1, "num_cpus": 1} if on_gpu else {"num_cpus": 1}
        actor = ray.remote(SweepWorker)
        threads = None if on_gpu else 1
        self.workers = [actor.options(**resources, max_restarts=0).remote(
            self.packs, self.options, self.cache_mb, threads) for _ in range(count)]
        self.labels = ray.get([w.ping.remote() for w in self.workers])

    def worker_named(self, label: str) -> Any:
        """The actor whose label is `label` (what a finished variant reports as its worker)."""
        return self.workers[self.labels.index(label)]

    def stop(self) -> None:
        for worker in self.workers:
            self.ray.kill(worker)
        self.workers, self.labels = [], []

    def run(self, jobs: list[VariantJob], on_done: OnDone) -> None:
        """Dispatch jobs to free workers; a worker that dies has its variant re-queued for the others.

        Workers started here are stopped at the end; after an explicit `start()` they stay up (for
        several sweeps on warm workers) until `stop()`."""
        started_here = not self.workers
        if started_here:
            self.start()
        try:
            self._dispatch(jobs, on_done)
        finally:
            if started_here:
                self.stop()

    def _dispatch(self, jobs: list[VariantJob], on_done: OnDone) -> None:
        ray = self.ray
        queue = deque(jobs)
        idle = list(self.workers)
        inflight: dict[Any, tuple[Any, VariantJob, float]] = {}
        try:
            while queue or inflight:
                while queue and idle:
                    worker, job = idle.pop(0), queue.popleft()
                    inflight[worker.run.remote(job)] = (worker, job, time.perf_counter())
                if not inflight:
                    raise NodegraphError(f"every Ray worker died; {len(queue)} variants did not run (run "
                                         "again with --resume)")
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    worker, job, sent = inflight.pop(ref)
                    outcome = self._result(ref, worker, job, queue)
                    if outcome is None:
                        continue
                    roundtrip = (time.perf_counter() - sent) * 1000
                    outcome.extra.update(roundtrip_ms=round(roundtrip, 3),
                                         overhead_ms=round(roundtrip - outcome.wall_ms, 3))
                    idle.append(worker)
                    on_done(outcome)
        finally:
            for ref in inflight:
                ray.cancel(ref)

    def _result(self, ref: Any, worker: Any, job: VariantJob, queue: deque[VariantJob]) -> Any:
        """The outcome, or None after re-queueing the job of a worker that died (dropping that worker)."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError:
            queue.appendleft(job)
            self.retried += 1
            alive = [i for i, w in enumerate(self.workers) if w is not worker]
            self.workers = [self.workers[i] for i in alive]
            self.labels = [self.labels[i] for i in alive]
            return None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, NodegraphError):
                raise cause from None
            raise
