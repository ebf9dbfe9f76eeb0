"""Independent branches on different lanes run at the same time; one lane runs one node at a time.

The second device is a stand-in: `cuda:1` counts as available and resolves to the CPU. Nodes that
must overlap wait on a shared `threading.Barrier(2)`: run one after the other, the first of them
times out at the barrier and the run fails, so these tests pass only when the branches really run at
once. Nothing here asserts on timings.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from nodegraph import Engine, RunOptions
from nodegraph.api import InputError, NodeContext, OutputFile, node
from nodegraph.errors import NodeFailed
from nodegraph.nodes.registry import PackSource, Registry, build_registry
from nodegraph.runtime import devices, executor
from nodegraph.runtime.context import NullProgress
from nodegraph.runtime.lanes import run_in_lanes
from nodegraph.runtime.report import NodeEvent
from nodegraph.testing import ToyPack

STAND_IN = "cuda:1"
DEFAULT_FILE = OutputFile("out.txt")
BARRIER_TIMEOUT_S = 10.0  # only reached when the branches do not overlap (the test then fails)


class Weights:
    """A model handle: nodes reading one run on the run's device (the residency manager places it)."""

    __nodegraph_resident__ = True

    def __init__(self, name: str) -> None:
        self.name = name


class Log:
    """Enter/exit records of node calls (label, thread), appended under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[tuple[str, str, int]] = []
        self.barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT_S)

    def call(self, what: str, label: str, meet: bool, fail: str) -> None:
        with self.lock:
            self.rows.append(("enter", label, threading.get_ident()))
        if meet:
            self.barrier.wait()
        else:
            time.sleep(0.005)  # widen the window in which a second node on the lane could slip in
        with self.lock:
            self.rows.append(("exit", label, threading.get_ident()))
        if fail == "input":
            raise InputError(f"{what} '{label}' cannot go on", field="label")
        if fail == "bug":
            raise ValueError(f"{what} '{label}' broke")
        if fail == "oom" and not any(r[1] == f"{label}:retried" for r in self.rows):
            with self.lock:
                self.rows.append(("note", f"{label}:retried", threading.get_ident()))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    def threads(self) -> dict[str, int]:
        return {label: ident for kind, label, ident in self.rows if kind == "enter"}


def _registry(log: Log) -> Registry:
    @node("lanes.model", version="1.0.0")
    def model(name: str) -> Weights:
        """A model handle (made on the host)."""
        return Weights(name)

    @node("lanes.work", version="1.0.0")
    def work(label: str, x: float = 0.0, meet: bool = False, fail: str = "") -> float:
        """Host work (or placed work): records its call, optionally meets another node at the barrier."""
        log.call("work", label, meet, fail)
        return x * 10 + len(label)

    @node("lanes.device_work", version="1.0.0")
    def device_work(
        ctx: NodeContext, weights: Weights, label: str, x: float = 0.0, meet: bool = False, fail: str = ""
    ) -> float:
        """Work that reads a model handle, so it runs on the run's (or its placed) device."""
        assert ctx.device == torch.device("cpu")  # the stand-in resolves to the CPU
        log.call("device_work", label, meet, fail)
        return x * 10 + len(label) + len(weights.name)

    @node("lanes.add", version="1.0.0")
    def add(values: list[float]) -> float:
        """Join branches."""
        return float(sum(values))

    @node("lanes.write", version="1.0.0", side_effects=True)
    def write(ctx: NodeContext, value: float, path: OutputFile = DEFAULT_FILE) -> str:
        """Write a value to a file in the output folder."""
        ctx.output_path(path).write_text(str(value))
        return str(path)

    module = ModuleType("lanes_test_nodes")
    for func in (model, work, device_work, add, write):
        func.__module__ = module.__name__
        setattr(module, func.__name__, func)
    return build_registry([PackSource("lanes", "1.0.0", "lanes_test_nodes", lambda: ToyPack(module))])


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cuda:1` is available and resolves to the CPU torch device."""
    available, resolve = devices.device_available, devices.resolve_device
    monkeypatch.setattr(devices, "device_available", lambda name: name == STAND_IN or available(name))
    monkeypatch.setattr(
        devices, "resolve_device", lambda name: torch.device("cpu") if name == STAND_IN else resolve(name)
    )


def _run(
    log: Log,
    nodes: dict[str, Any],
    out: Path,
    *,
    device: str = "cpu",
    placed: dict[str, str] | None = None,
    progress: Any = None,
) -> Any:
    graph: dict[str, Any] = {"version": 1, "nodes": nodes}
    if placed:
        graph["runtime"] = {"nodes": {k: {"device": v} for k, v in placed.items()}}
    return Engine(_registry(log)).run(
        graph, options=RunOptions(out_dir=out, device=device), progress=progress
    )


# two independent branches that meet at the barrier, joined at the end
BRANCHES = {
    "a": {"type": "lanes.work", "label": "a", "x": 1.0, "meet": True},
    "a2": {"type": "lanes.work", "label": "a2", "x": "@a"},
    "b": {"type": "lanes.work", "label": "bb", "x": 2.0, "meet": True},
    "b2": {"type": "lanes.work", "label": "b2", "x": "@b"},
    "join": {"type": "lanes.add", "values": ["@a2", "@b2"]},
    "save": {"type": "lanes.write", "value": "@join", "path": "sum.txt"},
}
TWO_DEVICES = {"a": "cpu", "a2": "cpu", "b": STAND_IN, "b2": STAND_IN}


def test_branches_placed_on_two_devices_run_at_once(stand_in: None, tmp_path: Path) -> None:
    log = Log()
    result = _run(log, BRANCHES, tmp_path, placed=TWO_DEVICES)
    threads = log.threads()
    assert threads["a"] != threads["bb"]  # they met at the barrier, so on two threads
    assert [e.node for e in result.events] == list(BRANCHES)  # one event per node, planned order
    assert list(result.outputs) == list(BRANCHES)
    assert result.outputs["join"]["out"] == (10 + 1) * 10 + 2 + (20 + 2) * 10 + 2
    assert (tmp_path / "sum.txt").read_text() == str(result.outputs["join"]["out"])


def test_same_outputs_and_report_as_a_sequential_run(
    stand_in: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = {k: {**v, "meet": False} if v["type"] == "lanes.work" else v for k, v in BRANCHES.items()}
    concurrent = _run(Log(), nodes, tmp_path / "c", placed=TWO_DEVICES)
    with monkeypatch.context() as m:
        m.setattr(executor, "plan_lanes", lambda plan, run: None)
        log = Log()
        sequential = _run(log, nodes, tmp_path / "s", placed=TWO_DEVICES)
    assert set(log.threads().values()) == {threading.get_ident()}
    assert concurrent.outputs == sequential.outputs

    def rows(result: Any) -> list[tuple[str, str, str]]:  # a side-effect node's key is unique per run
        return [(e.node, e.status, e.key if e.node != "save" else "") for e in result.events]

    assert rows(concurrent) == rows(sequential)
    assert (tmp_path / "c" / "sum.txt").read_text() == (tmp_path / "s" / "sum.txt").read_text()


def test_nodes_on_one_lane_never_overlap_and_keep_the_planned_order(stand_in: None, tmp_path: Path) -> None:
    nodes: dict[str, Any] = {"m": {"type": "lanes.model", "name": "m"}}
    placed = {}
    for i in range(4):  # document order interleaves the lanes
        nodes[f"c{i}"] = {"type": "lanes.work", "label": f"c{i}", "x": float(i)}
        nodes[f"g{i}"] = {"type": "lanes.device_work", "weights": "@m", "label": f"g{i}", "x": float(i)}
        placed[f"c{i}"] = "cpu"
    log = Log()
    result = _run(log, nodes, tmp_path, device=STAND_IN, placed=placed)
    for lane in ("c", "g"):
        rows = [(kind, label) for kind, label, _ in log.rows if label.startswith(lane)]
        expected = [(kind, f"{lane}{i}") for i in range(4) for kind in ("enter", "exit")]
        assert rows == expected  # each call exits before the next on its lane enters, in planned order
    assert result.outputs["g3"]["out"] == 30 + 2 + 1


def test_host_work_overlaps_device_work_on_a_gpu_run(stand_in: None, tmp_path: Path) -> None:
    nodes = {
        "m": {"type": "lanes.model", "name": "model"},
        "sample": {"type": "lanes.device_work", "weights": "@m", "label": "sample", "meet": True},
        "pose": {"type": "lanes.work", "label": "pose", "meet": True},
        "join": {"type": "lanes.add", "values": ["@sample", "@pose"]},
    }
    log = Log()
    result = _run(log, nodes, tmp_path, device=STAND_IN)
    assert log.threads()["sample"] != log.threads()["pose"]
    assert result.outputs["join"]["out"] == 6 + 5 + 4


def test_a_cpu_only_run_stays_on_the_calling_thread(tmp_path: Path) -> None:
    nodes = {
        "m": {"type": "lanes.model", "name": "model"},
        "g": {"type": "lanes.device_work", "weights": "@m", "label": "g"},
        "h": {"type": "lanes.work", "label": "h", "x": "@g"},
        "k": {"type": "lanes.work", "label": "k"},
    }
    log = Log()
    result = _run(log, nodes, tmp_path, device="cpu", placed={"k": "cpu"})
    assert set(log.threads().values()) == {threading.get_ident()}
    assert sorted(result.executed) == ["g", "h", "k", "m"]


def test_a_failing_branch_gives_the_located_error_and_writes_nothing(stand_in: None, tmp_path: Path) -> None:
    nodes = dict(BRANCHES, b={"type": "lanes.work", "label": "bb", "x": 2.0, "meet": True, "fail": "input"})
    out = tmp_path / "out"
    with pytest.raises(NodeFailed) as info:
        _run(Log(), nodes, out, placed=TWO_DEVICES)
    assert info.value.problem.node == "b" and info.value.problem.field == "label"
    assert "work 'bb' cannot go on" in str(info.value)
    assert not out.exists()


def test_when_both_branches_fail_the_earliest_planned_failure_is_raised(
    stand_in: None, tmp_path: Path
) -> None:
    nodes = dict(
        BRANCHES,
        a={"type": "lanes.work", "label": "a", "meet": True, "fail": "bug"},
        b={"type": "lanes.work", "label": "bb", "meet": True, "fail": "input"},
    )
    with pytest.raises(ValueError, match="work 'a' broke") as info:
        _run(Log(), nodes, tmp_path / "out", placed=TWO_DEVICES)
    assert any("while running node 'a' (lanes.work)" in note for note in info.value.__notes__)
    assert not (tmp_path / "out").exists()


def test_out_of_memory_is_retried_per_node_on_its_lane(stand_in: None, tmp_path: Path) -> None:
    nodes = dict(BRANCHES, b={"type": "lanes.work", "label": "bb", "x": 2.0, "meet": True, "fail": "oom"})
    nodes["a"] = {**nodes["a"], "meet": False}  # the retried call would meet nobody the second time
    nodes["b"] = {**nodes["b"], "meet": False}
    log = Log()
    result = _run(log, nodes, tmp_path, placed=TWO_DEVICES)
    assert any("b: out of memory" in note for note in result.notes)
    assert result.outputs["b"]["out"] == 22


def test_nodes_reading_one_checkpoint_never_overlap_across_lanes(stand_in: None, tmp_path: Path) -> None:
    nodes = {
        "m": {"type": "lanes.model", "name": "m"},
        "g0": {"type": "lanes.device_work", "weights": "@m", "label": "g0"},
        "g1": {"type": "lanes.device_work", "weights": "@m", "label": "g1"},
    }
    log = Log()
    _run(log, nodes, tmp_path, placed={"g0": "cpu", "g1": STAND_IN})
    assert [(kind, label) for kind, label, _ in log.rows] == [
        ("enter", "g0"),
        ("exit", "g0"),
        ("enter", "g1"),
        ("exit", "g1"),
    ]


class Recorder(NullProgress):
    """A run observer recording graph-level callbacks and the thread they came on."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def run_started(self, total: int) -> None:
        self.calls.append(("run", str(total), threading.get_ident()))

    def node_started(self, node_id: str, type_name: str) -> None:
        self.calls.append(("started", node_id, threading.get_ident()))

    def node_finished(self, event: NodeEvent) -> None:
        self.calls.append(("finished", event.node, threading.get_ident()))


def test_observer_hears_every_node_on_the_calling_thread_and_reruns_are_cached(
    stand_in: None, tmp_path: Path
) -> None:
    recorder = Recorder()
    nodes = {k: {**v, "meet": False} if v["type"] == "lanes.work" else v for k, v in BRANCHES.items()}
    log = Log()
    engine = Engine(_registry(log))
    placed = {k: {"device": v} for k, v in TWO_DEVICES.items()}
    graph = {"version": 1, "nodes": nodes, "runtime": {"nodes": placed}}
    engine.run(graph, options=RunOptions(out_dir=tmp_path / "1", device="cpu"), progress=recorder)
    assert {ident for *_, ident in recorder.calls} == {threading.get_ident()}
    for kind in ("started", "finished"):
        assert sorted(n for k, n, _ in recorder.calls if k == kind) == sorted(BRANCHES)
    again = engine.run(graph, options=RunOptions(out_dir=tmp_path / "2", device="cpu"))
    assert again.cached == ["a", "a2", "b", "b2", "join"] and again.executed == ["save"]


def test_an_interrupt_of_the_waiting_thread_cancels_and_waits_for_running_nodes() -> None:
    cancel = threading.Event()
    ran: list[str] = []

    def run_node(node_id: str) -> str:
        cancel.wait(BARRIER_TIMEOUT_S)  # a long node that stops when cancelled
        ran.append(node_id)
        return node_id

    def started(node_id: str) -> None:
        if node_id == "b":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_in_lanes(
            ["a", "b", "c"],
            {"a": set(), "b": set(), "c": {"a", "b"}},
            {"a": "cpu", "b": "cuda:1", "c": "cpu"},
            run_node,
            started=started,
            on_interrupt=cancel.set,
        )
    assert cancel.is_set() and ran == ["a"]  # a was awaited; c never started


def test_scheduler_refuses_nothing_a_sequential_run_would_do() -> None:
    """Lanes whose heads wait on each other's later nodes still finish (planned order is topological)."""
    order = ["a1", "b1", "a2", "b2", "a3"]
    upstream = {"a1": set(), "b1": {"a1"}, "a2": {"b1"}, "b2": {"a2"}, "a3": {"b2"}}
    lanes = {n: ("cpu" if n.startswith("a") else "cuda:1") for n in order}
    assert run_in_lanes(order, upstream, lanes, str.upper) == {n: n.upper() for n in order}


def test_a_controlnet_graph_on_a_stand_in_gpu_matches_the_cpu_run_exactly(
    stand_in: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real packs under lanes: pose rendering and saving on the host, encode/sample/decode on the GPU lane."""
    import numpy as np
    from PIL import Image as PILImage

    graph = Path(__file__).resolve().parents[3] / "graphs" / "controlnet_pose.yaml"
    lane_runs: list[dict[str, str]] = []

    def spy(order: list[str], upstream: Any, lanes: Any, run_node: Any, **kwargs: Any) -> Any:
        lane_runs.append(dict(lanes))
        return run_in_lanes(order, upstream, lanes, run_node, **kwargs)

    monkeypatch.setattr(executor, "run_in_lanes", spy)
    engine = Engine()
    results = {
        device: engine.run(
            graph, {"steps": 4}, RunOptions(out_dir=tmp_path / device.replace(":", "_"), device=device)
        )
        for device in ("cpu", STAND_IN)
    }
    assert len(lane_runs) == 1  # the CPU run stayed sequential; the stand-in GPU run used lanes
    lanes = lane_runs[0]
    assert lanes["skeleton"] == lanes["save"] == "cpu" and lanes["latents"] == lanes["image"] == STAND_IN
    for name in ("controlnet_pose.png", "pose_skeleton.png"):
        cpu, gpu = (np.asarray(PILImage.open(tmp_path / d / name)) for d in ("cpu", "cuda_1"))
        assert np.array_equal(cpu, gpu)
    assert [e.node for e in results["cpu"].events] == [e.node for e in results[STAND_IN].events]
    assert not results[STAND_IN].cached  # the device joins the cache key: everything ran again


def test_cli_user_error_on_a_stand_in_gpu_is_exit_2_with_the_cpu_run_message(
    stand_in: None, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    graph = Path(__file__).resolve().parents[3] / "graphs" / "controlnet_pose.yaml"
    outputs = {}
    for device in ("cpu", STAND_IN):
        out = tmp_path / device.replace(":", "_")
        args = ["run", str(graph), "--out", str(out), "--device", device, "--set", "pose=missing.json"]
        result = CliRunner().invoke(app, [*args, "--set", "steps=2"])
        assert result.exit_code == 2, result.output
        assert "skeleton" in result.output and "Traceback" not in result.output
        assert not out.exists()
        outputs[device] = result.output
    assert outputs["cpu"] == outputs[STAND_IN]
