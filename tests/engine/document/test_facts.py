"""Static facts (`@node(facts=...)`): checked at validation, in dependency order, opaque to the engine."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field

from nodegraph.api import Fact, FactError, FactsRequest, node
from nodegraph.document.load import load_plan
from nodegraph.errors import GraphError
from nodegraph.nodes.registry import PackSource, build_registry
from nodegraph.testing.toy import ToyPack

SEEN: list[str] = []


class Thing(str):
    """A port type."""


def make_facts(req: FactsRequest) -> dict[str, dict[str, Any]]:
    SEEN.append(req.node)
    return {"out": {"kind": req.literals["kind"]}}


def join_facts(req: FactsRequest) -> dict[str, dict[str, Any]]:
    SEEN.append(req.node)
    a, b = req.upstream["a"], req.upstream["b"]
    assert isinstance(a, Fact) and isinstance(b, Fact)
    if a.facts["kind"] != b.facts["kind"]:
        raise FactError(f"'{b.node}' is {b.facts['kind']} but '{a.node}' is {a.facts['kind']}", field="b")
    return {"out": dict(a.facts)}


def broken_facts(req: FactsRequest) -> None:
    raise RuntimeError("facts are best effort: this must not fail validation")


@pytest.fixture
def registry() -> Any:
    module = types.ModuleType("facts_toy")

    @node("toy.make", version="1.0.0", facts=make_facts)
    def make(kind: Annotated[str, Field(description="A kind")]) -> Thing:
        """Make a thing of a kind."""
        return Thing(kind)

    @node("toy.join", version="1.0.0", facts=join_facts)
    def join(a: Annotated[Thing, Field(description="One")],
             b: Annotated[Thing, Field(description="Two")]) -> Thing:
        """Join two things of one kind."""
        return Thing(a + b)

    @node("toy.odd", version="1.0.0", facts=broken_facts)
    def odd(a: Annotated[Thing, Field(description="One")]) -> Thing:
        """A node whose facts function breaks."""
        return a

    for func in (make, join, odd):
        func.__module__ = module.__name__
        setattr(module, func.__name__, func)
    return build_registry([PackSource("toy", "1.0.0", "facts_toy", lambda: ToyPack(module))])


def graph(tmp_path: Path, kind_b: str) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text("version: 1\nnodes:\n"
                    "  j: {type: toy.join, a: '@x', b: '@y'}\n"
                    "  x: {type: toy.make, kind: red}\n"
                    f"  y: {{type: toy.make, kind: {kind_b}}}\n"
                    "  o: {type: toy.odd, a: '@j'}\n")
    return path


def test_facts_run_upstream_first_and_pass(tmp_path: Path, registry: Any) -> None:
    SEEN.clear()
    load_plan(graph(tmp_path, "red"), registry)
    assert SEEN == ["x", "y", "j"]


def test_a_fact_error_is_a_validation_problem_at_the_node_and_field(tmp_path: Path, registry: Any) -> None:
    path = graph(tmp_path, "blue")
    with pytest.raises(GraphError) as info:
        load_plan(path, registry)
    (problem,) = info.value.problems
    assert problem.node == "j" and problem.field == "b" and problem.line == 3
    assert "'y' is blue but 'x' is red" in str(problem)
    assert problem.file == str(path)
