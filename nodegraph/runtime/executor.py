"""Run a `Plan`: nodes in topological order, each either taken from the cache or executed.

Nodes on different lanes (devices, see `lanes`) may run at the same time; a run on one lane (any
CPU-only run without multi-device placement) runs them one by one on the calling thread.

Inputs are gathered from literals and from the outputs of upstream nodes; a node's outputs are
checked against their declared types (a mismatch is a bug in the pack and is reported as such).
Files go through a staging folder, so a run writes all of its outputs or none.
"""

from __future__ import annotations

import resource
import sys
import time
import types
import uuid
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from nodegraph.document.plan import Link, Plan, PlannedNode
from nodegraph.errors import GraphError, InputError, NodeFailed, NodegraphError, PluginError, Problem
from nodegraph.runtime.cache import Cache, node_key
from nodegraph.runtime.context import Cancelled, RunContext
from nodegraph.runtime.lanes import plan_lanes, run_in_lanes
from nodegraph.runtime.oom import with_oom_retry
from nodegraph.runtime.ordering import execution_order, model_groups, swap_aware_order
from nodegraph.runtime.report import NodeEvent, RunResult
from nodegraph.runtime.staging import Staging

_RSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux


class NodeBug(RuntimeError):
    """A node broke its own declaration (for example returned a value of another type than declared)."""


@runtime_checkable
class RunObserver(Protocol):
    """Optional graph-level callbacks a progress sink may implement (the CLI's rich bars do)."""

    def run_started(self, total: int) -> None: ...
    def node_started(self, node_id: str, type_name: str) -> None: ...
    def node_finished(self, event: NodeEvent) -> None: ...


def requested_runtime(run: RunContext, node_id: str) -> dict[str, str]:
    """The device, dtype and optimize level a node is asked for, as written (no torch import needed)."""
    setting = run.placement.nodes.get(node_id) if run.placement is not None else None
    return {
        "device": (setting.device if setting and setting.device else None) or run.options.device,
        "dtype": (setting.dtype if setting and setting.dtype else None) or run.options.dtype,
        "optimize": run.options.optimize or "none",
    }


def _gather(node: PlannedNode, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    inputs = dict(node.literals)
    for name, link in node.links.items():
        if isinstance(link, Link):
            inputs[name] = results[link.node][link.output]
        else:
            inputs[name] = [results[item.node][item.output] for item in link]
    return inputs


def _plain_class(tp: Any) -> type | None:
    if isinstance(tp, type) and not isinstance(tp, types.GenericAlias) and tp is not type(None):
        return tp
    return None


def check_outputs(node: PlannedNode, outputs: dict[str, Any]) -> None:
    """Raise `NodeBug` when an output is missing or not an instance of its declared (plain class) type."""
    spec = node.spec
    for name, out in spec.outputs.items():
        if name not in outputs:
            raise NodeBug(
                f"node '{node.id}' ({spec.type_name} {spec.version}, pack '{spec.pack}') "
                f"returned no output '{name}'"
            )
        cls = _plain_class(out.type)
        value = outputs[name]
        if cls is None or isinstance(value, cls) or (cls is float and isinstance(value, int)):
            continue
        raise NodeBug(
            f"node '{node.id}' ({spec.type_name} {spec.version}, pack '{spec.pack}') returned "
            f"{type(value).__qualname__} for output '{name}', but declares {cls.__qualname__}: "
            "this is a bug in the pack, not in your graph"
        )


class _Meter:
    """Wall time and peak-memory growth of one call (RSS high-water mark; CUDA peak when in use).

    The RSS figure is process-wide: while lanes overlap, another lane's growth can show here too. The
    CUDA peak is the node's lane's device (the current device when run one by one); nodes on the host
    lane leave it alone, so they do not reset the peak a sampler on the GPU lane is measuring.
    """

    def __init__(self, lane: str | None = None) -> None:
        self.lane = lane

    def __enter__(self) -> _Meter:
        self.cuda = None
        torch = sys.modules.get("torch")
        on_cuda = self.lane is None or self.lane.startswith("cuda")
        if on_cuda and torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            self.cuda = torch.cuda
            self.cuda.reset_peak_memory_stats(self.lane)
        self.rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_ms = (time.perf_counter() - self.t0) * 1000
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.rss0
        self.peak_mb = grown * _RSS_UNIT / 2**20
        self.cuda_mb = self.cuda.max_memory_allocated(self.lane) / 2**20 if self.cuda is not None else None


def _locate(plan: Plan, node: PlannedNode, message: str, field: str | None) -> Problem:
    return Problem(
        message, file=str(plan.file) if plan.file else None, line=node.line, node=node.id, field=field
    )


def _call(plan: Plan, node: PlannedNode, run: RunContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Call the node, turning user-caused errors into located `NodeFailed` problems."""
    try:
        return node.spec.call(run.for_node(node.id, node.spec.type_name), inputs)
    except InputError as exc:
        raise NodeFailed(_locate(plan, node, exc.message, exc.field)) from exc
    except (Cancelled, NodeFailed, GraphError, PluginError):
        raise
    except NodegraphError as exc:
        raise NodeFailed(_locate(plan, node, str(exc), None)) from exc
    except KeyboardInterrupt:
        run.cancel_event.set()
        raise
    except Exception as exc:
        where = f"{plan.file}:{node.line}" if plan.file and node.line else str(plan.file or "<graph>")
        exc.add_note(f"while running node '{node.id}' ({node.spec.type_name}) at {where}")
        raise


class _NodeRunner:
    """One run's keys and results so far; runs one node, from the cache or by calling it.

    Safe to call from one thread per lane: a node only reads the entries of nodes upstream of it,
    which are complete before it starts, and writes its own.
    """

    def __init__(self, plan: Plan, run: RunContext, cache: Cache, lanes: dict[str, str] | None) -> None:
        self.plan = plan
        self.lanes = lanes
        self.run = run
        self.cache = cache
        self.base_dir = plan.file.parent if plan.file else Path.cwd()
        self.nonce = uuid.uuid4().hex
        self.keys: dict[str, str] = {}
        self.results: dict[str, dict[str, Any]] = {}
        # outputs no cacheable node reads (a decoded image feeding only save_image): the memory tier
        # keeps fewer of them (see `MemoryCache`), they are rarely read again
        self.terminal = {
            node_id for node_id in plan.nodes
            if node_id not in plan.dag
            or not any(plan.nodes[s].spec.cacheable for s in plan.dag.successors(node_id))
        }

    def key(self, node_id: str) -> str:
        """Check for cancellation, then compute (and remember) the node's cache key."""
        if self.run.cancel_event.is_set():
            raise Cancelled("run cancelled")
        node = self.plan.nodes[node_id]
        key = node_key(node, self.keys, self.base_dir, self.nonce, requested_runtime(self.run, node_id),
                       tuple(self.run.options.model_dirs))
        self.keys[node_id] = key
        return key

    def __call__(self, node_id: str, key: str | None = None) -> NodeEvent:
        """Run one node (its key computed first unless given); its outputs go to `results`."""
        key = key if key is not None else self.key(node_id)
        plan, run, cache = self.plan, self.run, self.cache
        node = plan.nodes[node_id]
        spec = node.spec
        cached = cache.get(key) if spec.cacheable else None
        if cached is not None:
            self.results[node_id] = cached
            return NodeEvent(node_id, spec.type_name, "cached", 0.0, 0.0, key)
        inputs = _gather(node, self.results)
        with _Meter(self.lanes[node_id] if self.lanes is not None else None) as meter:
            outputs = with_oom_retry(partial(_call, plan, node, run, inputs), run, node_id)
        check_outputs(node, outputs)
        self.results[node_id] = outputs
        if spec.cacheable:
            cache.put(key, outputs, terminal=node_id in self.terminal)
        return NodeEvent(
            node_id,
            spec.type_name,
            "executed",
            round(meter.wall_ms, 3),
            round(meter.peak_mb, 3),
            key,
            round(meter.cuda_mb, 3) if meter.cuda_mb is not None else None,
        )


def _sequential(order: list[str], runner: _NodeRunner, observer: RunObserver | None) -> list[NodeEvent]:
    events: list[NodeEvent] = []
    for node_id in order:
        key = runner.key(node_id)
        if observer is not None:
            observer.node_started(node_id, runner.plan.nodes[node_id].spec.type_name)
        event = runner(node_id, key)
        events.append(event)
        if observer is not None:
            observer.node_finished(event)
    return events


def _concurrent(
    order: list[str], lanes: dict[str, str], runner: _NodeRunner, observer: RunObserver | None
) -> list[NodeEvent]:
    """Nodes on different lanes at the same time (see `lanes`); events still in the planned order."""
    plan = runner.plan
    upstream = {
        node_id: set(plan.dag.predecessors(node_id)) if node_id in plan.dag else set() for node_id in order
    }

    def started(node_id: str) -> None:
        if observer is not None:
            observer.node_started(node_id, plan.nodes[node_id].spec.type_name)

    def finished(node_id: str, event: NodeEvent) -> None:
        if observer is not None:
            observer.node_finished(event)

    events = run_in_lanes(
        order,
        upstream,
        lanes,
        runner,
        shared=model_groups(plan),
        started=started,
        finished=finished,
        on_interrupt=runner.run.cancel_event.set,
    )
    return [events[node_id] for node_id in order]


def execute(
    plan: Plan, run: RunContext, cache: Cache, staging: Staging, observer: RunObserver | None = None
) -> RunResult:
    """Run every node of `plan` (from cache where possible); commit staged files on success.

    When the run spans more than one lane (a GPU run with host work, or nodes placed on several
    devices), independent nodes on different lanes run at the same time; otherwise strictly one after
    another on the calling thread. The caller wraps this in `staged_outputs`, which discards the
    staging folder on any failure.
    """
    t0 = time.perf_counter()
    # document order, except that (by default) nodes needing one model stay together
    order = execution_order(plan) if run.options.order == "document" else swap_aware_order(plan)
    lanes = plan_lanes(plan, run)
    runner = _NodeRunner(plan, run, cache, lanes)
    if observer is not None:
        observer.run_started(len(order))
    if lanes is None:
        events = _sequential(order, runner, observer)
    else:
        events = _concurrent(order, lanes, runner, observer)
    written = staging.commit(run.output_nodes)
    outputs = {node_id: runner.results[node_id] for node_id in order}  # planned order, as events
    owners = {staging.out_dir / staged.relative_to(staging.dir): node_id
              for staged, node_id in run.output_nodes.items()}
    return RunResult(outputs, events, written, (time.perf_counter() - t0) * 1000, run.metadata,
                     written_by={path: owners[path] for path in written if path in owners})
