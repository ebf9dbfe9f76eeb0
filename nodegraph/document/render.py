"""Show a plan to people: a text listing in run order, Mermaid and Graphviz DOT diagrams.

All three walk nodes in a topological order that follows the file where it can (ties broken by
document order), so the output is stable and reads top to bottom like the graph file.
"""

from __future__ import annotations

import json
from typing import Any

import networkx as nx

from nodegraph.document.plan import Link, Plan, PlannedNode


def run_order(plan: Plan) -> list[str]:
    """Node ids in a topological order, earliest in the file first among the ready ones."""
    position = {node_id: i for i, node_id in enumerate(plan.nodes)}
    return list(nx.lexicographical_topological_sort(plan.dag, key=lambda n: position.get(n, 0)))


def _edges(node: PlannedNode) -> list[tuple[Link, str]]:
    """(link, input name) for every link into `node`; list inputs give `name[i]`."""
    found = []
    for name, links in node.links.items():
        if isinstance(links, list):
            found += [(link, f"{name}[{i}]") for i, link in enumerate(links)]
        else:
            found.append((links, name))
    return found


def _link_text(link: Link, plan: Plan) -> str:
    source = plan.nodes.get(link.node)
    single = source is not None and len(source.spec.outputs) == 1
    return f"@{link.node}" if single else f"@{link.node}.{link.output}"


def _literal_text(value: Any, limit: int = 40) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_text(plan: Plan) -> str:
    """A listing in run order: each node, its type, its links (`input <- @source`) and literals."""
    lines = []
    head = f"graph {plan.file}" if plan.file else "graph"
    lines.append(head + (f": {plan.description}" if plan.description else ""))
    if plan.params:
        lines.append("params: " + ", ".join(f"{k}={_literal_text(v)}" for k, v in plan.params.items()))
    order = run_order(plan)
    width = max((len(n) for n in order), default=0)
    for step, node_id in enumerate(order, 1):
        node = plan.nodes[node_id]
        lines.append(f"{step:>3}. {node_id:<{width}}  {node.spec.type_name}")
        for link, name in _edges(node):
            lines.append(f"       {name} <- {_link_text(link, plan)}")
        for name, value in node.literals.items():
            lines.append(f"       {name} = {_literal_text(value)}")
    return "\n".join(lines) + "\n"


def _mermaid_label(text: str) -> str:
    return text.replace('"', "#quot;")


def render_mermaid(plan: Plan) -> str:
    """A Mermaid flowchart (left to right); edges are labelled `output -> input`."""
    lines = ["flowchart LR"]
    order = run_order(plan)
    key = {node_id: f"n{i}" for i, node_id in enumerate(order)}  # ids like `end` would break Mermaid
    for node_id in order:
        node = plan.nodes[node_id]
        label = f"{_mermaid_label(node_id)}<br/><small>{node.spec.type_name}</small>"
        lines.append(f'    {key[node_id]}["{label}"]')
    for node_id in order:
        for link, name in _edges(plan.nodes[node_id]):
            label = _mermaid_label(f"{link.output} → {name}")
            lines.append(f'    {key[link.node]} -->|"{label}"| {key[node_id]}')
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(plan: Plan) -> str:
    """A Graphviz DOT digraph (`dot -Tsvg`); edges are labelled `output -> input`."""
    lines = ["digraph nodegraph {", "    rankdir=LR;",
             '    node [shape=box, style=rounded, fontname="Helvetica"];']
    if plan.description:
        lines.append(f"    label={_dot_quote(plan.description)};")
    for node_id in run_order(plan):
        node = plan.nodes[node_id]
        label = _dot_quote(f"{node_id}\n{node.spec.type_name}")
        lines.append(f"    {_dot_quote(node_id)} [label={label}];")
    for node_id in run_order(plan):
        for link, name in _edges(plan.nodes[node_id]):
            label = _dot_quote(f"{link.output} -> {name}")
            lines.append(f"    {_dot_quote(link.node)} -> {_dot_quote(node_id)} [label={label}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
