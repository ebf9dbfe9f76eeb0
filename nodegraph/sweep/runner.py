"""A sweep from start to finish: check every variant, skip the finished ones (`--resume`), hand the rest
to an executor, write each result as it arrives, and draw the contact sheet.

An executor only decides *where* variants run: `LocalExecutor` runs them one after another on one
engine in this process (shared models and cache, so only the nodes a swept value touches re-run);
`nodegraph.sweep.ray_executor.RayExecutor` spreads them over Ray actors. Both report each finished
variant through `on_done`, in the driver process, which alone writes outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from nodegraph.runtime.context import Cancelled, RunOptions
from nodegraph.runtime.engine import Engine
from nodegraph.sweep.contact import first_image, render_sheet
from nodegraph.sweep.outputs import SweepFolder, write_atomic
from nodegraph.sweep.ranking import RankBy, Ranking, rank_variants
from nodegraph.sweep.spec import Axis
from nodegraph.sweep.variants import Variant, build_variants
from nodegraph.sweep.worker import VariantJob, VariantOutcome, run_variant

CONTACT_SHEET = "contact_sheet.png"
OnDone = Callable[[VariantOutcome], None]


class Executor(Protocol):
    """Runs variant jobs somewhere and calls `on_done` in this process for each finished one."""

    def run(self, jobs: list[VariantJob], on_done: OnDone) -> None: ...


class SweepInterrupted(Cancelled):
    """Ctrl-C during a sweep: says how many variants finished (those are kept; `--resume` goes on)."""


@dataclass
class SweepSpec:
    """A validated sweep: the graph, its axes, the fixed `--set` overrides and the expanded variants."""

    graph: Path
    axes: list[Axis]
    zipped: bool
    fixed: dict[str, str]
    variants: list[Variant]

    def job(self, variant: Variant) -> VariantJob:
        return VariantJob(str(self.graph.resolve()), variant.index, variant.key, variant.name,
                          {**self.fixed, **variant.overrides})


@dataclass
class SweepSummary:
    """What a sweep did: how many variants there are, ran now, were already done; where the sheet is."""

    total: int
    ran: int
    skipped: int
    wall_s: float
    contact_sheet: Path | None
    manifest: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    ranking: Ranking | None = None  # with --rank-by


def prepare_sweep(engine: Engine, graph: Path | str, axes: list[Axis], zipped: bool,
                  fixed: Mapping[str, str] | None = None, options: RunOptions | None = None) -> SweepSpec:
    """Expand and check every variant (raises `GraphError` naming bad targets/values before any run).

    `options` (device, dtype) join each variant's key, so `--resume` on another device re-runs."""
    from nodegraph.errors import NodegraphError

    graph = Path(graph)
    fixed = dict(fixed or {})
    both = [a.target for a in axes if a.target in fixed]
    if both:
        raise NodegraphError(f"'{both[0]}' is both set (--set) and swept (--sweep); use one of them")

    def load(overrides: Mapping[str, Any]) -> Any:
        return engine.load(graph, {**fixed, **overrides})

    runtime = {"device": options.device, "dtype": options.dtype} if options is not None else None
    return SweepSpec(graph, axes, zipped, fixed, build_variants(load, axes, zipped, runtime))


class LocalExecutor:
    """Variants one after another in this process, on one engine (models and cache shared)."""

    def __init__(self, engine: Engine, options: RunOptions) -> None:
        self.engine = engine
        self.options = options

    def run(self, jobs: list[VariantJob], on_done: OnDone) -> None:
        for job in jobs:
            outcome = run_variant(self.engine, job, self.options)
            on_done(outcome)


def run_sweep(spec: SweepSpec, executor: Executor, out_dir: Path | str, resume: bool = False,
              progress: Callable[[int, int], None] | None = None, rank: RankBy | None = None) -> SweepSummary:
    """Run the variants not yet done; `progress(done, total)` after each. Ctrl-C -> `SweepInterrupted`.
    With `rank`, the finished variants are then ranked by that node's score (nodegraph.sweep.ranking)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    folder = SweepFolder(out_dir, resume)
    todo = [v for v in spec.variants if not (resume and folder.done(v))]
    skipped = len(spec.variants) - len(todo)
    by_index = {v.index: v for v in todo}
    finished = [skipped]

    def on_done(outcome: VariantOutcome) -> None:
        variant = by_index.get(outcome.index)
        if variant is None or folder.write(variant, outcome) is None:
            return  # unknown or already written (a retried variant that finished twice)
        finished[0] += 1
        if progress is not None:
            progress(finished[0], len(spec.variants))

    if progress is not None:
        progress(skipped, len(spec.variants))
    try:
        executor.run([spec.job(v) for v in todo], on_done)
    except (KeyboardInterrupt, Cancelled) as exc:
        write_sheet(spec, folder)
        raise SweepInterrupted(
            f"interrupted: {finished[0]} of {len(spec.variants)} variants finished and kept in {out_dir} "
            f"(manifest {folder.manifest.name}); run again with --resume to do the rest") from exc
    sheet = write_sheet(spec, folder)
    entries = [e for e in folder.entries_for(spec.variants) if e is not None]
    ranking = rank_variants(spec.variants, folder, rank) if rank is not None else None
    return SweepSummary(len(spec.variants), finished[0] - skipped, skipped, time.perf_counter() - t0, sheet,
                        folder.manifest, entries, ranking)


def write_sheet(spec: SweepSpec, folder: SweepFolder) -> Path | None:
    """Draw the contact sheet from the manifest (finished variants; grey cells for the rest)."""
    images = [first_image(entry, folder.out_dir) for entry in folder.entries_for(spec.variants)]
    data = render_sheet(spec.axes, spec.zipped, spec.variants, images)
    if data is None:
        return None
    path = folder.target(PurePosixPath(CONTACT_SHEET))
    write_atomic(path, data)
    return path
