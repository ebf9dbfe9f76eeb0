"""Run one variant and hand back its files as bytes, so the sweep's driver alone writes the outputs.

The same code runs in the local executor and inside each Ray actor. A worker keeps one `Engine`
(models resident, its own cache) for its whole life, so a variant reloads nothing that an earlier
variant on that worker already loaded, and re-runs only the nodes its values touch. Files are
produced in a private temporary folder and returned, which works the same whether the worker shares
a disk with the driver or sits on another machine; the driver writes them atomically.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodegraph.nodes.registry import Registry, build_registry, entry_point_sources
from nodegraph.runtime.context import RunOptions
from nodegraph.runtime.engine import Engine


@dataclass(frozen=True)
class VariantJob:
    """What a worker needs to run one variant (plain data: it crosses process boundaries)."""

    graph: str  # absolute path of the graph file (workers on other machines need it at the same path)
    index: int
    key: str
    name: str
    overrides: dict[str, str]


@dataclass
class VariantOutcome:
    """One finished variant: its files (relative path -> bytes), what ran, and how long it took."""

    index: int
    key: str
    files: dict[str, bytes]
    events: list[dict[str, Any]]
    wall_ms: float
    worker: str = "local"
    extra: dict[str, Any] = field(default_factory=dict)
    # the run's notes (fallbacks taken; what nodes reported, e.g. clip.rank's scores), kept in the manifest
    notes: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # node id -> ctx.score() figure (--rank-by)


def registry_for(packs: tuple[str, ...] | None) -> Registry:
    """The installed packs, or only the named ones (what `$NODEGRAPH_PACKS` chose on the driver)."""
    if not packs:
        return build_registry()
    return build_registry([s for s in entry_point_sources() if s.name in packs])


def run_variant(engine: Engine, job: VariantJob, options: RunOptions,
                worker: str = "local") -> VariantOutcome:
    """Run `job` on `engine` into a private folder and return its files; the folder is always removed."""
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="nodegraph-variant-"))
    try:
        run_options = dataclasses.replace(options, out_dir=tmp / "out", show_progress=False)
        result = engine.run(job.graph, dict(job.overrides), options=run_options)
        files = {p.relative_to(run_options.out_dir).as_posix(): p.read_bytes() for p in result.written}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return VariantOutcome(job.index, job.key, files, result.report, (time.perf_counter() - t0) * 1000, worker,
                          notes=list(result.notes), scores=dict(result.scores))


class SweepWorker:
    """A long-lived worker: one engine, many variants. Ray wraps this class as an actor."""

    def __init__(self, packs: tuple[str, ...] | None, options: RunOptions, cache_mb: float = 2048,
                 threads: int | None = None) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.engine = Engine(registry_for(packs), cache_mb=cache_mb)
        self.options = options
        self.label = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, job: VariantJob) -> VariantOutcome:
        """Run one variant on this worker's engine."""
        return run_variant(self.engine, job, self.options, self.label)

    def ping(self) -> str:
        """Answers once the worker is up (its engine built), so start-up is not counted as variant time."""
        return self.label
