"""Renderings of a plan (text, Mermaid, DOT) and the JSON Schema of the file format."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from nodegraph.document.load import load_plan
from nodegraph.document.render import render_dot, render_mermaid, render_text, run_order
from nodegraph.document.schema import graph_json_schema
from nodegraph.nodes.registry import Registry

from .conftest import GRAPHS_OK, INVALID


def test_run_order_follows_the_file_where_it_can(toys: Registry) -> None:
    plan = load_plan({"version": 1, "nodes": {
        "late": {"type": "toy.add", "a": "@early"},
        "early": {"type": "toy.number", "value": 1},
        "other": {"type": "toy.number", "value": 2},
    }}, toys)
    assert run_order(plan) == ["early", "late", "other"]


def test_render_text(toys: Registry) -> None:
    text = render_text(load_plan(GRAPHS_OK / "toy_chain.yaml", toys))
    lines = text.splitlines()
    assert lines[0].endswith("toy_chain.yaml: toy chain")
    assert lines[1] == 'params: seed=7, label="total: {}"'
    assert "  1. a       toy.number" in lines
    assert "       values[0] <- @b.low" in lines
    assert "       values[2] <- @a" in lines
    assert "       factor = 7" in lines
    assert text.index("scaled") < text.index("text ")


def test_render_mermaid(toys: Registry) -> None:
    text = render_mermaid(load_plan(GRAPHS_OK / "toy_chain.yaml", toys))
    assert text.startswith("flowchart LR\n")
    assert '    n0["a<br/><small>toy.number</small>"]' in text
    assert '    n1 -->|"low → values[0]"| n2' in text
    assert text.count("-->") == 7


def test_render_dot_quotes_names(toys: Registry) -> None:
    plan = load_plan({"version": 1, "description": 'say "hi"', "nodes": {
        "n-1": {"type": "toy.number", "value": 1}, "end": {"type": "toy.add", "a": "@n-1"}}}, toys)
    text = render_dot(plan)
    assert text.startswith("digraph nodegraph {")
    assert 'label="say \\"hi\\"";' in text
    assert '"n-1" -> "end" [label="out -> a"];' in text
    assert text.rstrip().endswith("}")


@pytest.fixture(scope="module")
def validator(registry: Registry) -> jsonschema.Draft202012Validator:
    schema = graph_json_schema(registry)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, doc: object) -> list[str]:
    return [e.message for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("name", ["toy_chain.yaml", "toy_dogs.json", "core_text.yaml"])
def test_schema_accepts_valid_graphs(validator: jsonschema.Draft202012Validator, name: str) -> None:
    doc = yaml.safe_load((GRAPHS_OK / name).read_text())
    assert _errors(validator, doc) == []


def test_schema_rejects_invalid_graphs(validator: jsonschema.Draft202012Validator) -> None:
    doc = yaml.safe_load((GRAPHS_OK / "toy_chain.yaml").read_text())
    for change, expected in [
        (lambda d: d["nodes"]["scaled"].update(factor=1000), "is not valid under any of the given schemas"),
        (lambda d: d["nodes"]["a"].update(vaule=1), "'vaule' was unexpected"),
        (lambda d: d["nodes"]["a"].pop("value"), "'value' is a required property"),
        (lambda d: d["nodes"]["a"].update(type="toy.nope"), "is not one of"),
        (lambda d: d.update(version=2), "2 is not one of [1]"),
        (lambda d: d["nodes"]["b"].update(x="@a.b.c"), "is not valid under any of the given schemas"),
    ]:
        bad = copy.deepcopy(doc)
        change(bad)
        assert any(expected in e for e in _errors(validator, bad)), (expected, _errors(validator, bad))


def test_schema_rejects_literals_for_port_types(validator: jsonschema.Draft202012Validator) -> None:
    doc = yaml.safe_load((INVALID / "literal_for_port_type.yaml").read_text())
    assert _errors(validator, doc)
    doc["nodes"]["img"] = {"type": "core.load_image", "path": "in.png"}
    doc["nodes"]["save"]["image"] = "@img"
    assert _errors(validator, doc) == []


def test_schema_describes_inputs(registry: Registry) -> None:
    schema = graph_json_schema(registry)
    scale = schema["$defs"]["node-toy.scale"]
    assert scale["description"] == "Multiply by a small integer factor."
    assert scale["required"] == ["type", "x"]
    factor = scale["properties"]["factor"]
    assert "Integer factor" in factor["description"]
    assert {"type": "integer", "minimum": -100, "maximum": 100}.items() <= factor["anyOf"][-1].items()


PROJECT_GRAPHS = sorted((GRAPHS_OK.parents[2] / "graphs").glob("*.yaml"))


@pytest.mark.parametrize("path", PROJECT_GRAPHS, ids=lambda p: p.name)
def test_project_graphs_load_round_trip_and_match_the_schema(
    path: Path, registry: Registry, validator: jsonschema.Draft202012Validator
) -> None:
    plan = load_plan(path, registry)
    assert _errors(validator, yaml.safe_load(path.read_text())) == []
    again = load_plan(plan.resolved, registry, file=path)
    assert {n: (p.literals, p.links) for n, p in again.nodes.items()} == \
        {n: (p.literals, p.links) for n, p in plan.nodes.items()}
    assert render_text(plan).count("\n") >= len(plan.nodes)
