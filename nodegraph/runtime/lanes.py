"""Lanes: which nodes of a run may execute at the same time, and a small scheduler that runs them so.

A node's *lane* is the device its work happens on:
- the device the graph places it on (`runtime.nodes.<id>.device`), when this machine has it;
- else, for a node that reads a model handle (see `ordering.model_groups`), the run's device;
- else the host (`cpu`): image I/O, preprocessors, saving, text and number nodes.

Nodes on one lane run one at a time, in the planned order (so the swap-aware grouping holds within a
lane); nodes on different lanes run at the same time as soon as their upstream nodes are done, e.g.
a pose render on the host while the GPU samples, or two branches placed on two devices. Two nodes that
read the same checkpoint never run at once, even on different lanes (the residency manager keeps one
copy of a model, which must not move while another node uses it).

A run whose nodes all share one lane (every CPU-only run without multi-device placement) returns None
from `plan_lanes` and the executor keeps its plain sequential loop: no threads at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from nodegraph.document.plan import Plan
from nodegraph.runtime import devices
from nodegraph.runtime.context import RunContext
from nodegraph.runtime.ordering import model_groups

HOST = "cpu"
T = TypeVar("T")


def lane_of(device_name: str) -> str:
    """The lane of a device name: `auto` resolved, `cuda` as `cuda:N`; the host is `cpu`."""
    if device_name == "auto":
        return devices.device_key(devices.resolve_device(device_name))
    return devices.device_key(device_name)


def plan_lanes(plan: Plan, run: RunContext) -> dict[str, str] | None:
    """Node id -> lane, or None when every node would share one lane (then run sequentially).

    Torch is imported only when a node reads a model or has a placement.
    """
    groups = model_groups(plan)
    placed = {
        node_id: setting.device
        for node_id, setting in (run.placement.nodes.items() if run.placement is not None else ())
        if setting.device
    }
    if not placed and not any(groups.values()):
        return None  # nothing but host work
    run_device = run.options.device
    run_lane = lane_of(run_device) if devices.device_available(run_device) else HOST
    lanes: dict[str, str] = {}
    for node_id in plan.nodes:
        device = placed.get(node_id)
        if device is not None and devices.device_available(device):
            lanes[node_id] = lane_of(device)
        elif device is not None or groups[node_id]:
            lanes[node_id] = run_lane  # a device this machine lacks falls back to the run's
        else:
            lanes[node_id] = HOST
    return lanes if len(set(lanes.values())) > 1 else None


def run_in_lanes(
    order: list[str],
    upstream: Mapping[str, set[str]],
    lanes: Mapping[str, str],
    run_node: Callable[[str], T],
    *,
    shared: Mapping[str, frozenset[str]] | None = None,
    started: Callable[[str], None] | None = None,
    finished: Callable[[str, T], None] | None = None,
    on_interrupt: Callable[[], None] | None = None,
) -> dict[str, T]:
    """Call `run_node` for every node in `order`, one thread per lane; return node id -> result.

    A node starts when its upstream nodes are done, it is next in its lane (planned order), and no
    running node shares an entry of `shared` with it (the checkpoints it reads). `started` and
    `finished` are called on the calling thread. After a failure no node planned after the failed one
    starts; the running ones are awaited and the failure of the earliest planned node is raised: the
    error a sequential run would have raised. On an interrupt of the waiting thread (Ctrl-C),
    `on_interrupt` is called (to cancel the running nodes), they are awaited and the interrupt goes on.
    """
    position = {node_id: i for i, node_id in enumerate(order)}
    queues: dict[str, list[str]] = {}
    for node_id in order:
        queues.setdefault(lanes[node_id], []).append(node_id)
    shared = shared or {}
    done: dict[str, T] = {}
    failures: dict[str, BaseException] = {}
    running: dict[Future[T], str] = {}

    def can_start(node_id: str) -> bool:
        if failures and position[node_id] > min(position[f] for f in failures):
            return False
        in_use = frozenset().union(*(shared.get(n, frozenset()) for n in running.values()))
        return upstream[node_id] <= done.keys() and not (shared.get(node_id, frozenset()) & in_use)

    with ThreadPoolExecutor(max_workers=len(queues), thread_name_prefix="nodegraph-lane") as pool:
        try:
            while True:
                busy = {lanes[n] for n in running.values()}
                for lane, queue in queues.items():
                    if queue and lane not in busy and can_start(queue[0]):
                        node_id = queue.pop(0)
                        if started is not None:
                            started(node_id)
                        running[pool.submit(run_node, node_id)] = node_id
                if not running:
                    break
                completed, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(completed, key=lambda f: position[running[f]]):
                    node_id = running.pop(future)
                    error = future.exception()
                    if error is not None:
                        failures[node_id] = error
                        continue
                    done[node_id] = future.result()
                    if finished is not None:
                        finished(node_id, done[node_id])
        except BaseException:
            if on_interrupt is not None:
                on_interrupt()
            wait(running)
            raise
    if failures:
        raise failures[min(failures, key=position.__getitem__)]
    if len(done) != len(order):  # cannot happen for a topological order; say so loudly if it does
        raise RuntimeError(f"lane scheduler stalled with {sorted(set(order) - done.keys())} not run")
    return done
