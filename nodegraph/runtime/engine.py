"""The library front end: an `Engine` holds what outlives one run (registry, cache, resident models).

    engine = Engine(cache_dir="~/.cache/nodegraph")
    result = engine.run("graphs/core_text.yaml", overrides={"name": "Ada"})
    result.outputs["shout"]["out"], result.executed, result.cached, result.written

A process that runs many graphs (watch mode, a server, tests) keeps one engine, so unchanged nodes
are not recomputed and models are not reloaded.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from nodegraph.document.plan import Plan
from nodegraph.errors import GraphError, Problem
from nodegraph.nodes.registry import Registry, build_registry
from nodegraph.runtime.cache import Cache
from nodegraph.runtime.context import NullProgress, ProgressSink, RunContext, RunOptions
from nodegraph.runtime.executor import RunObserver, execute
from nodegraph.runtime.metadata import metadata_from_png, run_metadata
from nodegraph.runtime.placement import NodePlacement, merged_options, runtime_settings
from nodegraph.runtime.report import RunResult
from nodegraph.runtime.residency import ResidencyManager, residency_report
from nodegraph.runtime.staging import staged_outputs

Source = Plan | Path | str | dict[str, Any]


class Engine:
    """Registry, cache and residency manager shared by the runs of one process."""

    def __init__(self, registry: Registry | None = None, cache_mb: float = 2048,
                 cache_dir: Path | str | None = None, *, vram_budget: int | None = None,
                 ram_budget: int | None = None, resources: ResidencyManager | None = None,
                 cache_disk_mb: float | None = None) -> None:
        """`vram_budget`/`ram_budget` in bytes (None: device total minus a margin / no limit); tests
        may pass their own `resources` manager (fake devices and sizes). `cache_dir` keeps a disk cache
        there (none by default in the library; the CLI keeps one in the user's cache folder), bounded by
        `cache_disk_mb` (default `$NODEGRAPH_CACHE_MAX_MB`, else 2048)."""
        self._registry = registry
        self.cache = Cache(cache_mb, cache_dir, cache_disk_mb)
        self.resources = resources or ResidencyManager(vram_budget=vram_budget, ram_budget=ram_budget)

    @property
    def registry(self) -> Registry:
        """The node registry; built from the installed packs on first use when none was given."""
        if self._registry is None:
            self._registry = build_registry()
        return self._registry

    def load(self, source: Path | str | dict[str, Any], overrides: dict[str, Any] | None = None, *,
             file: Path | None = None) -> Plan:
        """Parse and validate a graph file (YAML/JSON), a PNG written by nodegraph, or a dict."""
        from nodegraph.document.load import load_plan

        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.exists():
                raise GraphError([Problem(f"graph file '{path}' does not exist", file=str(path))])
            if path.suffix.lower() == ".png":
                from nodegraph.runtime.cachedir import default_cache_dir
                from nodegraph.runtime.png_inputs import locate_inputs

                data = metadata_from_png(path)
                graph = data.get("graph") if data else None
                if not isinstance(graph, dict):
                    raise GraphError([Problem("this PNG carries no nodegraph graph (it was not written by "
                                              "core.save_image)", file=str(path))])
                records = data.get("inputs") if isinstance(data.get("inputs"), list) else []
                found = locate_inputs(records, path, overrides, default_cache_dir())  # files it read
                return _checked(load_plan(graph, self.registry, found or None, file=path))
            return _checked(load_plan(path, self.registry, overrides))
        return _checked(load_plan(source, self.registry, overrides, file=file))

    def run(self, plan_or_path: Source, overrides: dict[str, Any] | None = None,
            options: RunOptions | None = None, progress: ProgressSink | None = None,
            cancel: threading.Event | None = None) -> RunResult:
        """Run a graph; unchanged nodes come from the cache. Writes all outputs or none.

        `cancel`: set it from another thread (a server's cancel request) to stop the run before its
        next node or sampler step; the run then raises `Cancelled` and writes nothing.

        Raises `GraphError` for an invalid graph, `NodeFailed` for a node's bad input, and lets
        `KeyboardInterrupt` through after removing staged files.
        """
        if isinstance(plan_or_path, Plan):
            if overrides:
                raise TypeError("overrides apply when loading; pass a path or dict, or load with overrides")
            plan = plan_or_path
        else:
            plan = self.load(plan_or_path, overrides)
        settings = runtime_settings(plan)
        options = merged_options(options or RunOptions(), settings)
        sink = progress or NullProgress()
        with staged_outputs(options.out_dir) as staging:
            placement = NodePlacement(options.device, options.dtype, settings.nodes)
            run = RunContext(
                options=options,
                resources=self.resources,
                staging_dir=staging.dir,
                graph_file=plan.file,
                metadata=run_metadata(plan, self.registry),
                progress_sink=sink,
                placement=placement,
                cancel_event=cancel or threading.Event(),
            )
            observer = sink if isinstance(sink, RunObserver) else None
            before = self.resources.begin_run()
            result = execute(plan, run, self.cache, staging, observer)
        result.resources = residency_report(self.resources, before)
        result.notes = [*placement.notes, *run.notes, *result.resources["notes"], *self.cache.end_run()]
        result.scores = dict(run.scores)
        return result

    run_file = run


def _checked(plan: Plan) -> Plan:
    """The plan, once its `runtime:` block is valid (so `nodegraph validate` reports bad settings)."""
    runtime_settings(plan)
    return plan
