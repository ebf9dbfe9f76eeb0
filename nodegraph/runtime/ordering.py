"""Execution order that minimises model swaps, among the valid topological orders of a plan.

A node *needs a model* when one of its inputs is linked to an output whose type declares
`__nodegraph_resident__ = True` (model handles: the residency manager materialises them when the node
runs). Handles passed through nodes that transform them (a LoRA node takes a UNet handle and gives
one back) are traced to their root: the node that made the handle first, i.e. the checkpoint.
A value whose type declares `__nodegraph_defers_models__ = True` (a sampler condition: a ControlNet or
adapter unit, which loads its model only when the sampler activates it) carries the models its maker
read to whoever consumes it, so a sampler's group holds its checkpoint *and* its control models.

The order is built greedily: among the ready nodes (all inputs done), take the first in document
order that needs no model or only the model group in use; switch groups only when nothing else is
ready. So a graph that interleaves two checkpoints runs all of one checkpoint's nodes, then the
other's, and under a tight memory budget loads each once instead of once per switch. A graph with
no model handles gets exactly the document-ordered topological order.
"""

from __future__ import annotations

import bisect
from typing import Any

import networkx as nx

from nodegraph.document.plan import Link, Plan

RESIDENT_MARK = "__nodegraph_resident__"
DEFERS_MARK = "__nodegraph_defers_models__"


def is_resident_type(tp: Any) -> bool:
    """Whether values of this port type are model handles the residency manager materialises."""
    return bool(getattr(tp, RESIDENT_MARK, False))


def _links(plan: Plan, node_id: str) -> list[tuple[str, Link]]:
    out: list[tuple[str, Link]] = []
    for name, link in plan.nodes[node_id].links.items():
        for item in ([link] if isinstance(link, Link) else link):
            out.append((name, item))
    return out


def _root(plan: Plan, link: Link, seen: frozenset[tuple[str, str]] = frozenset()) -> str:
    """The node at the start of a chain of handle-transforming nodes (the checkpoint loader)."""
    node = plan.nodes[link.node]
    out_type = node.spec.outputs[link.output].type
    if (link.node, link.output) in seen:
        return link.node
    for name, item in _links(plan, link.node):
        if node.spec.inputs[name].port_type is out_type:
            return _root(plan, item, seen | {(link.node, link.output)})
    return link.node


def plan_graph(plan: Plan) -> nx.DiGraph:
    """The plan's dependency graph including nodes without links (the plan's dag holds only linked ones)."""
    graph = plan.dag.copy()
    graph.add_nodes_from(plan.nodes)
    return graph


def execution_order(plan: Plan) -> list[str]:
    """A topological order of the plan, ties broken by document order (so runs are reproducible)."""
    position = {node_id: i for i, node_id in enumerate(plan.nodes)}
    key = lambda n: position.get(n, len(position))  # noqa: E731
    return list(nx.lexicographical_topological_sort(plan_graph(plan), key=key))


def model_groups(plan: Plan) -> dict[str, frozenset[str]]:
    """Node id -> the roots (checkpoint nodes) of the model handles it reads (empty: needs no model)."""
    graph = plan_graph(plan)
    groups: dict[str, frozenset[str]] = {}
    for node_id in nx.topological_sort(graph):
        if node_id not in plan.nodes:
            continue
        roots: set[str] = set()
        for _name, link in _links(plan, node_id):
            source = plan.nodes.get(link.node)
            if source is None:
                continue
            out_type = source.spec.outputs[link.output].type
            if is_resident_type(out_type):
                roots.add(_root(plan, link))
            elif getattr(out_type, DEFERS_MARK, False):
                roots |= groups.get(link.node, frozenset())
        groups[node_id] = frozenset(roots)
    return {node_id: groups[node_id] for node_id in plan.nodes}


def swap_aware_order(plan: Plan) -> list[str]:
    """A topological order of the plan that keeps nodes needing the same model together."""
    groups = model_groups(plan)
    if not any(groups.values()):
        return execution_order(plan)
    position = {node_id: i for i, node_id in enumerate(plan.nodes)}
    graph = plan_graph(plan)
    waiting = {n: graph.in_degree(n) for n in graph}
    ready = sorted((position.get(n, len(position)), n) for n, d in waiting.items() if d == 0)
    current: frozenset[str] = frozenset()
    order: list[str] = []
    while ready:
        # the first ready node needing no model or only models in use; else switch: prefer one sharing a
        # model with the current group, then the first ready node
        pick = next((c for c in ready if groups[c[1]] <= current), None) \
            or next((c for c in ready if groups[c[1]] & current), ready[0])
        ready.remove(pick)
        node_id = pick[1]
        if groups[node_id]:
            current = groups[node_id]
        order.append(node_id)
        for succ in graph.successors(node_id):
            waiting[succ] -= 1
            if waiting[succ] == 0:
                bisect.insort(ready, (position.get(succ, len(position)), succ))
    return order


def count_switches(order: list[str], groups: dict[str, frozenset[str]]) -> int:
    """How often consecutive model-needing nodes in `order` change model group (for reports, tests)."""
    switches, last = 0, frozenset[str]()
    for node_id in order:
        group = groups.get(node_id, frozenset())
        if not group:
            continue
        if last and not (group & last):
            switches += 1
        last = group
    return switches
