"""Executor: what runs, what comes from the cache, how errors are located."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodegraph import Engine, RunOptions
from nodegraph.errors import NodeFailed
from nodegraph.runtime.executor import NodeBug, execution_order
from nodegraph.testing import CallCounter, toy_registry
from tests.engine.runtime.conftest import make_plan

CHAIN = {
    "a": {"type": "toy.number", "value": 1.0},
    "b": {"type": "toy.number", "value": 10.0},
    "sum": {"type": "toy.add", "a": "@a", "b": "@b"},
    "scaled": {"type": "toy.scale", "x": "@sum", "factor": 3},
    "text": {"type": "toy.format", "value": "@scaled", "template": "={}"},
    "other": {"type": "toy.scale", "x": "@b"},  # depends on b only
}


def _run(engine: Engine, nodes: dict, tmp_path: Path):
    return engine.run(make_plan(engine.registry, nodes), options=RunOptions(out_dir=tmp_path / "out"))


def test_changed_literal_reruns_exactly_that_node_and_descendants(tmp_path: Path) -> None:
    counter = CallCounter()
    engine = Engine(toy_registry(counter))
    first = _run(engine, CHAIN, tmp_path)
    assert first.outputs["text"]["out"] == "=33.0"
    assert counter.calls == {"toy.number": 2, "toy.add": 1, "toy.scale": 2, "toy.format": 1}

    again = _run(engine, CHAIN, tmp_path)
    assert again.executed == []
    assert sorted(again.cached) == sorted(CHAIN)
    assert sum(counter.calls.values()) == 6  # nothing re-ran

    changed = {**CHAIN, "a": {"type": "toy.number", "value": 2.0}}
    third = _run(engine, changed, tmp_path)
    assert third.executed == ["a", "sum", "scaled", "text"]
    assert sorted(third.cached) == ["b", "other"]
    assert third.outputs["text"]["out"] == "=36.0"
    assert counter.calls == {"toy.number": 3, "toy.add": 2, "toy.scale": 3, "toy.format": 2}

    # a literal of a downstream node: only it and its descendants
    fourth = _run(engine, {**changed, "scaled": {"type": "toy.scale", "x": "@sum", "factor": 4}}, tmp_path)
    assert fourth.executed == ["scaled", "text"]


def test_independent_branches_and_multi_outputs(tmp_path: Path) -> None:
    counter = CallCounter()
    engine = Engine(toy_registry(counter))
    nodes = {
        "x": {"type": "toy.number", "value": 5.0},
        "split": {"type": "toy.split", "x": "@x"},
        "left": {"type": "toy.scale", "x": "@split.low"},
        "right": {"type": "toy.scale", "x": "@split.high", "factor": -1},
        "y": {"type": "toy.number", "value": 1.0},
        "lone": {"type": "toy.scale", "x": "@y"},
        "all": {"type": "toy.sum", "values": ["@left", "@right", "@lone"]},
    }
    plan = make_plan(engine.registry, nodes)
    order = execution_order(plan)
    for u, v in plan.dag.edges:
        assert order.index(u) < order.index(v)
    result = engine.run(plan, options=RunOptions(out_dir=tmp_path))
    assert result.outputs["split"] == {"low": 4.0, "high": 6.0}
    assert result.outputs["all"]["out"] == 8.0 - 6.0 + 2.0
    changed = engine.run(make_plan(engine.registry, {**nodes, "y": {"type": "toy.number", "value": 2.0}}),
                         options=RunOptions(out_dir=tmp_path))
    assert changed.executed == ["y", "lone", "all"]


def test_non_deterministic_node_never_cached_and_descendants_rerun(tmp_path: Path) -> None:
    counter = CallCounter()
    engine = Engine(toy_registry(counter))
    nodes = {"r": {"type": "toy.random", "seed": 1}, "s": {"type": "toy.scale", "x": "@r"},
             "k": {"type": "toy.number", "value": 3.0}}
    first = _run(engine, nodes, tmp_path)
    second = _run(engine, nodes, tmp_path)
    assert first.outputs["r"]["out"] == 1.0 and second.outputs["r"]["out"] == 2.0
    assert second.executed == ["r", "s"] and second.cached == ["k"]
    assert counter.calls == {"toy.random": 2, "toy.scale": 2, "toy.number": 1}
    assert first.report[0]["key"] != second.report[0]["key"]


def test_input_error_becomes_located_node_failed(tmp_path: Path) -> None:
    engine = Engine(toy_registry())
    plan = make_plan(engine.registry, {"n": {"type": "toy.number", "value": 1.0},
                                       "bad": {"type": "toy.fail", "x": "@n"}}, file=tmp_path / "g.yaml")
    with pytest.raises(NodeFailed) as info:
        engine.run(plan, options=RunOptions(out_dir=tmp_path / "out"))
    problem = info.value.problem
    assert (problem.node, problem.field, problem.line) == ("bad", "x", 2)
    assert problem.file == str(tmp_path / "g.yaml")
    assert str(problem) == f"{tmp_path / 'g.yaml'}:2: node 'bad', field 'x': cannot use 1.0"


def test_wrong_output_type_is_reported_as_a_pack_bug(tmp_path: Path) -> None:
    from types import ModuleType

    from nodegraph.api import node
    from nodegraph.nodes.registry import PackSource, build_registry
    from nodegraph.testing import ToyPack

    @node("liar.number", version="1.0.0")
    def number(value: float) -> float:
        """Claims a float, returns text."""
        return "not a number"  # type: ignore[return-value]

    module = ModuleType("liar_nodes")
    number.__module__ = module.__name__
    module.number = number  # type: ignore[attr-defined]
    registry = build_registry([PackSource("liar", "1", "liar_nodes", lambda: ToyPack(module))])
    engine = Engine(registry)
    with pytest.raises(NodeBug, match=r"node 'n' \(liar.number 1.0.0, pack 'liar'\) returned str for output "
                                      r"'out', but declares float"):
        engine.run(make_plan(registry, {"n": {"type": "liar.number", "value": 1.0}}),
                   options=RunOptions(out_dir=tmp_path))


def test_report_rows(tmp_path: Path) -> None:
    engine = Engine(toy_registry())
    result = _run(engine, CHAIN, tmp_path)
    rows = result.report
    assert [r["node"] for r in rows] == ["a", "b", "sum", "scaled", "text", "other"]
    assert {r["status"] for r in rows} == {"executed"}
    for row in rows:
        assert set(row) >= {"node", "type", "status", "wall_ms", "peak_mb", "key"}
        assert row["wall_ms"] >= 0 and row["peak_mb"] >= 0 and len(row["key"]) == 64
    data = result.report_json()
    assert data["executed"] == [r["node"] for r in rows] and data["cached"] == []
    assert data["versions"]["packs"] == {"toy": "1.0.0"}
    assert data["versions"]["python"]
