"""Resolve `@links` to node outputs, check each edge's types, and find cycles.

Edge types follow `fits(output type, input type)`; a list input accepts a list of links (each item
must fit the element type), or one link whose output is the whole list, or one link of the element
type (read as a list of one).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

import networkx as nx

from nodegraph.document.inputs import container_type
from nodegraph.document.plan import Link
from nodegraph.document.refs import LinkRef
from nodegraph.nodes.spec import SINGLE_OUTPUT, InputSpec, NodeSpec, fits, type_name_of

Report = Callable[[str, str | None], None]


def resolve_link(
    ref: LinkRef,
    ispec: InputSpec,
    as_item: bool,
    node_types: Mapping[str, NodeSpec | None],
    report: Report,
) -> tuple[Link | None, Any]:
    """The `Link` a reference names and its output type (None, None after a problem).

    A link to a node of unknown type resolves without checks: that node is reported already.
    """
    if ref.node not in node_types:
        close = difflib.get_close_matches(ref.node, list(node_types), n=1)
        hint = f" (did you mean '@{close[0]}'?)" if close else ""
        report(f"link '{ref.text}': there is no node '{ref.node}'{hint}", ispec.name)
        return None, None
    target = node_types[ref.node]
    if target is None:
        return Link(ref.node, ref.output or SINGLE_OUTPUT), Any
    outputs = target.outputs
    if ref.output is None:
        if len(outputs) != 1:
            choices = " or ".join(f"'@{ref.node}.{o}'" for o in outputs)
            report(f"link '{ref.text}': node '{ref.node}' ({target.type_name}) has several outputs "
                   f"({', '.join(outputs)}); write {choices}", ispec.name)
            return None, None
        output = next(iter(outputs))
    else:
        output = ref.output
        if output not in outputs:
            close = difflib.get_close_matches(output, list(outputs), n=1)
            hint = f"did you mean '@{ref.node}.{close[0]}'? " if close else ""
            report(f"link '{ref.text}': node '{ref.node}' ({target.type_name}) has no output '{output}' "
                   f"({hint}outputs: {', '.join(outputs)})", ispec.name)
            return None, None
    out_type = outputs[output].type
    want = ispec.port_type if (as_item or not ispec.is_list) else container_type(ispec)
    ok = fits(out_type, want) or (not as_item and ispec.is_list and fits(out_type, ispec.port_type))
    if not ok:
        expected = type_name_of(want)
        if ispec.is_list and not as_item:
            expected += f" (or one {type_name_of(ispec.port_type)})"
        report(f"output '{ref.node}.{output}' is {type_name_of(out_type)}, input '{ispec.name}' expects "
               f"{expected}", ispec.name)
        return None, None
    return Link(ref.node, output), out_type


def link_input(
    refs: LinkRef | list[LinkRef],
    ispec: InputSpec,
    node_types: Mapping[str, NodeSpec | None],
    report: Report,
) -> Link | list[Link] | None:
    """Resolve the links of one input; a single element-typed link into a list input becomes [link]."""
    if isinstance(refs, list):
        links = [resolve_link(r, ispec, True, node_types, report)[0] for r in refs]
        return None if any(link is None for link in links) else [link for link in links if link]
    link, out_type = resolve_link(refs, ispec, False, node_types, report)
    if link is None:
        return None
    if ispec.is_list and out_type is not Any and not fits(out_type, container_type(ispec)):
        return [link]
    return link


def targets(refs: LinkRef | list[LinkRef]) -> list[str]:
    return [r.node for r in refs] if isinstance(refs, list) else [refs.node]


def find_cycles(dag: nx.DiGraph, order: Mapping[str, int]) -> list[list[str]]:
    """One cycle per strongly connected group of nodes, each listed from its first node in the file."""
    cycles = []
    groups = [c for c in nx.strongly_connected_components(dag)
              if len(c) > 1 or any(dag.has_edge(n, n) for n in c)]
    for group in sorted(groups, key=lambda c: min(order.get(n, 0) for n in c)):
        start = min(group, key=lambda n: order.get(n, 0))
        edges = nx.find_cycle(dag.subgraph(group), source=start)
        path = [edges[0][0]] + [v for _, v in edges]
        cycles.append(path)
    return cycles
