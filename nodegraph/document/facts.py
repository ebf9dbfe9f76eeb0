"""Static facts: what nodes can tell about their outputs before anything runs, checked at validation.

Port types catch a Latents fed into an Image input; they cannot catch values of the right type that
do not belong together (a pack's conditioning made for one kind of model fed to another kind). A node
may declare `@node(..., facts=func)`: a light function (no heavy imports; it runs on `validate`) that
gets a `FactsRequest` — its literal inputs and the facts of every output linked into it, with the
node that made them — and returns facts (plain mappings) for its own outputs, or raises `FactError`
naming the input at fault. The engine treats facts as opaque: what they mean is the packs' business.

Facts are best effort: a facts function that cannot tell (a file it cannot read) returns nothing, and
the node's own checks at run time still apply. Any error other than `FactError` is ignored here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # packs import this module through nodegraph.api: keep it light
    import networkx as nx


class FactError(ValueError):
    """A facts function's verdict: these inputs do not belong together. `field` names the input."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Fact:
    """The facts of one output, and where they come from (for messages naming both nodes)."""

    node: str  # id of the node that made the output
    output: str
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FactsRequest:
    """What a facts function gets: literals by input name, upstream facts by input name (a list of
    Fact for list inputs; absent where the linked output has no facts), and the graph's folder."""

    node: str
    literals: Mapping[str, Any]
    upstream: Mapping[str, Fact | list[Fact]]
    base_dir: Path


FactsFunc = Callable[[FactsRequest], Mapping[str, Mapping[str, Any]] | None]
Report = Callable[[str, str, str | None], None]  # (node id, message, field)


def infer_facts(nodes: Mapping[str, Any], dag: nx.DiGraph, base_dir: Path, report: Report) -> None:
    """Run every node's facts function in dependency order; report each `FactError` at its node.

    `nodes` maps node id -> a planned node (`spec`, `literals`, `links`); the dag has no cycles.
    """
    import networkx as nx

    known: dict[tuple[str, str], Mapping[str, Any]] = {}
    for node_id in nx.lexicographical_topological_sort(dag):
        planned = nodes.get(node_id)
        func = getattr(planned.spec, "facts", None) if planned is not None else None
        if func is None:
            continue
        upstream: dict[str, Fact | list[Fact]] = {}
        for name, links in planned.links.items():
            if isinstance(links, list):
                upstream[name] = [Fact(ln.node, ln.output, known[(ln.node, ln.output)]) for ln in links
                                  if (ln.node, ln.output) in known]
            elif (links.node, links.output) in known:
                upstream[name] = Fact(links.node, links.output, known[(links.node, links.output)])
        try:
            result = func(FactsRequest(node_id, dict(planned.literals), upstream, base_dir))
        except FactError as exc:
            report(node_id, str(exc), exc.field)
            continue
        except Exception:  # noqa: BLE001 - facts are best effort; the node checks again when it runs
            continue
        for output, facts in (result or {}).items():
            known[(node_id, output)] = dict(facts)
