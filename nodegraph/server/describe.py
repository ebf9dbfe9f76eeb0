"""A validated plan described for the page (`POST /api/inspect`): nodes with typed ports, links,
layers by depth for a layered drawing, and the params as a form (types, ranges, choices)."""

from __future__ import annotations

from typing import Any

import networkx as nx

from nodegraph.document.plan import Link, Plan
from nodegraph.nodes.spec import MISSING, type_name_of


def _links(plan: Plan) -> list[dict[str, Any]]:
    rows = []
    for node_id, node in plan.nodes.items():
        for name, value in node.links.items():
            for link in value if isinstance(value, list) else [value]:
                assert isinstance(link, Link)
                source = plan.nodes[link.node].spec.outputs.get(link.output)
                rows.append({"from": [link.node, link.output], "to": [node_id, name],
                             "type": type_name_of(source.type) if source is not None else "Any"})
    return rows


def _layers(plan: Plan) -> list[list[str]]:
    """Node ids by depth (longest path from a source), in document order within a layer."""
    order = {node_id: i for i, node_id in enumerate(plan.nodes)}
    depth: dict[str, int] = {}
    for node_id in nx.topological_sort(plan.dag):
        preds = list(plan.dag.predecessors(node_id))
        depth[node_id] = 1 + max((depth[p] for p in preds), default=-1)
    for node_id in plan.nodes:
        depth.setdefault(node_id, 0)
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node_id in sorted(depth, key=order.__getitem__):
        layers[depth[node_id]].append(node_id)
    return layers


def _nodes(plan: Plan) -> list[dict[str, Any]]:
    rows = []
    for node_id, node in plan.nodes.items():
        spec = node.spec
        inputs = []
        for name, ispec in spec.inputs.items():
            entry: dict[str, Any] = {"name": name, "type": type_name_of(ispec.port_type)}
            if name in node.literals:
                entry["value"] = _jsonable(node.literals[name])
            elif ispec.default is not MISSING and name not in node.links:
                entry["value"] = _jsonable(ispec.default)
            inputs.append(entry)
        rows.append({"id": node_id, "type": spec.type_name, "doc": spec.description, "inputs": inputs,
                     "outputs": [{"name": o.name, "type": type_name_of(o.type)}
                                 for o in spec.outputs.values()],
                     "line": node.line})
    return rows


def _params(plan: Plan) -> list[dict[str, Any]]:
    declared = plan.resolved.get("params", {}) if isinstance(plan.resolved, dict) else {}
    rows = []
    for name, decl in declared.items():
        if not isinstance(decl, dict):
            continue
        row: dict[str, Any] = {"name": name, "type": decl.get("type", "str"),
                               "default": _jsonable(plan.params.get(name, decl.get("default")))}
        for key in ("minimum", "maximum", "choices", "description"):
            if decl.get(key) is not None:
                row[key] = decl[key]
        rows.append(row)
    return rows


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def describe(plan: Plan, fmt: str, text: str) -> dict[str, Any]:
    """The `/api/inspect` answer for a plan (docs/server_api.md)."""
    return {"format": fmt, "text": text, "description": plan.description, "nodes": _nodes(plan),
            "links": _links(plan), "layers": _layers(plan), "params": _params(plan)}
