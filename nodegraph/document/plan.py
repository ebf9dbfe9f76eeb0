"""A validated graph, ready to execute: the contract between the document layer and the runtime."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from nodegraph.nodes.spec import NodeSpec


@dataclass(frozen=True)
class Link:
    """A reference to one output of another node (`@node` or `@node.output`)."""

    node: str
    output: str


@dataclass(frozen=True)
class PlannedNode:
    id: str
    spec: NodeSpec
    literals: dict[str, Any]  # validated literal inputs, params already substituted, defaults filled
    links: dict[str, Link | list[Link]]  # inputs fed by other nodes (a list for list inputs)
    line: int | None = None  # line of the node in the source file


@dataclass(frozen=True)
class Plan:
    """Everything the executor needs; building one means the graph passed validation."""

    nodes: dict[str, PlannedNode]  # in document order
    dag: nx.DiGraph  # node ids; edge u -> v when v reads an output of u
    params: dict[str, Any]  # resolved param values
    resolved: dict[str, Any]  # the resolved document (params substituted), embedded in outputs
    file: Path | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileLiteral:
    """One file name a node reads, as written (`value`) and resolved against the graph's folder."""

    node: str
    field: str
    value: str
    path: Path
    port_type: Any


def file_literals(plan: Plan) -> Iterator[FileLiteral]:
    """The literals of fingerprinted input types (files, model paths), list items one by one.

    The one walk over a plan's file inputs: the watcher, the PNG metadata and the input records all
    read it, so what counts as "a file the graph reads" is decided here once.
    """
    base = plan.file.parent if plan.file else Path.cwd()
    for node in plan.nodes.values():
        for name, value in node.literals.items():
            inp = node.spec.inputs.get(name)
            if inp is None or value is None or not hasattr(inp.port_type, "__nodegraph_fingerprint__"):
                continue
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if not isinstance(item, str):
                    continue
                path = Path(item).expanduser()
                yield FileLiteral(node.id, name, item, path if path.is_absolute() else base / path,
                                  inp.port_type)
