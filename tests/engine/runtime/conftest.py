"""Helpers for runtime tests: build `Plan`s by hand (no document layer needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from nodegraph.document.plan import Link, Plan, PlannedNode
from nodegraph.nodes.registry import Registry
from nodegraph.nodes.spec import MISSING


def _link(text: str) -> Link:
    node, _, output = text[1:].partition(".")
    return Link(node, output or "out")


def make_plan(registry: Registry, nodes: dict[str, dict[str, Any]], file: Path | None = None) -> Plan:
    """`{"a": {"type": "toy.number", "value": 1}, "b": {"type": "toy.add", "a": "@a"}}` -> Plan."""
    planned: dict[str, PlannedNode] = {}
    dag = nx.DiGraph()
    for line, (node_id, body) in enumerate(nodes.items(), start=1):
        spec = registry.get(body["type"])
        assert spec is not None, body["type"]
        literals: dict[str, Any] = {}
        links: dict[str, Link | list[Link]] = {}
        for name, value in body.items():
            if name == "type":
                continue
            if isinstance(value, str) and value.startswith("@"):
                links[name] = _link(value)
            elif isinstance(value, list) and value and all(isinstance(v, str) and v.startswith("@")
                                                           for v in value):
                links[name] = [_link(v) for v in value]
            else:
                literals[name] = spec.validate_literal(name, value)
        for name, inp in spec.inputs.items():
            if name not in literals and name not in links and inp.default is not MISSING:
                literals[name] = inp.default
        planned[node_id] = PlannedNode(node_id, spec, literals, links, line)
        dag.add_node(node_id)
        for link in links.values():
            for item in link if isinstance(link, list) else [link]:
                dag.add_edge(item.node, node_id)
    resolved = {"version": 1, "nodes": {k: dict(v) for k, v in nodes.items()}}
    return Plan(planned, dag, {}, resolved, file=file)


@pytest.fixture
def plan_of():
    return make_plan
