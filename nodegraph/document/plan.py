"""A validated graph, ready to execute: the contract between the document layer and the runtime."""

from __future__ import annotations

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
