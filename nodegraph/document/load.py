"""Load a graph document into a validated `Plan`, reporting every problem at once.

The file format (version 1), in short:

    version: 1                       # required
    description: what the graph shows
    params:                          # optional: typed knobs, used as $name, set with --set name=...
      seed: {type: int, default: 7, minimum: 0}
    nodes:                           # node id -> {type: pack.name, <input>: <value>, ...}
      n:   {type: core.number, value: 2}
      sum: {type: core.join_text, parts: ["@a", "@b.out"], separator: $sep}
    metadata: {...}                  # optional, free-form, kept as Plan.extra["metadata"]
    runtime: {...}                   # optional device/dtype/optimize settings, Plan.extra["runtime"]
                                     # (checked by nodegraph.runtime.placement)

Input values: a literal; `"@id"` (the single output of node id) or `"@id.output"`; a list of links
(list inputs); `"$param"` (whole value or list item); `"@@..."`/`"$$..."` for literal text that
starts with `@`/`$`. Node ids match `[A-Za-z_][A-Za-z0-9_-]*`.

`Plan.resolved` is the document as it runs: overrides applied, each param's default replaced by the
value used (params no node reads any more are dropped), and omitted optional inputs written out with
their defaults. It is plain JSON data and loads back with `load_plan` to the same plan, which is
what lets an image carry the graph that made it (and be re-run with new `--set` values).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from nodegraph.document.facts import infer_facts
from nodegraph.document.inputs import NodeDraft, accepts_literal, check_node_inputs
from nodegraph.document.links import find_cycles, link_input, targets
from nodegraph.document.overrides import split_overrides
from nodegraph.document.params import ParamDecl, check_value, read_params
from nodegraph.document.plan import Link, Plan, PlannedNode
from nodegraph.document.refs import ID_RE, LinkRef, ParamRef, escape, read_ref
from nodegraph.document.source import Source, read_source
from nodegraph.errors import GraphError, Problem
from nodegraph.nodes.registry import Registry
from nodegraph.nodes.spec import NodeSpec

SUPPORTED_VERSIONS = (1,)
TOP_LEVEL_KEYS = ("version", "description", "params", "nodes", "metadata", "runtime")


def load_plan(
    source: Path | str | Mapping[str, Any],
    registry: Registry,
    overrides: Mapping[str, Any] | None = None,
    *,
    file: Path | None = None,
) -> Plan:
    """Parse and validate a graph (a .yaml/.yml/.json path, or parsed data) into a runnable `Plan`.

    `file` names where parsed data came from (a PNG, say): problems cite it and input paths are
    relative to it. Raises `GraphError` listing every problem found; never any other exception
    for bad input.
    """
    if isinstance(source, Mapping):
        where = str(file) if file is not None else None
        data, problems = plain_data(source, where)
        src: Source | None = Source(data, {}, where) if not problems else None
        graph_file = file
    else:
        graph_file = file or Path(source)
        src, problems = read_source(Path(source), str(source))
    if src is None:
        raise GraphError(problems)
    plan, more = build_plan(src, registry, overrides or {}, graph_file)
    problems = _ordered(problems + more)
    if problems or plan is None:
        raise GraphError(problems or [Problem("the graph could not be loaded", file=src.file)])
    return plan


def plain_data(value: Any, file: str | None) -> tuple[Any, list[Problem]]:
    """A deep copy of `value` as JSON-like data (tuples become lists), or problems naming what is not."""
    problems: list[Problem] = []

    def copy_of(item: Any, path: str, depth: int) -> Any:
        if depth > 64:
            problems.append(Problem(f"'{path}' is nested too deeply", file=file))
            return None
        if item is None or isinstance(item, (str, bool, int, float)):
            return item
        if isinstance(item, Mapping):
            out = {}
            for key, sub in item.items():
                if not isinstance(key, str):
                    problems.append(Problem(f"'{path}' has a key that is not text: {key!r}", file=file))
                    continue
                out[key] = copy_of(sub, f"{path}.{key}" if path else key, depth + 1)
            return out
        if isinstance(item, (list, tuple)):
            return [copy_of(sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(item)]
        problems.append(Problem(f"'{path}' holds a {type(item).__name__}, not plain data", file=file))
        return None

    return copy_of(value, "", 0), problems


def _ordered(problems: list[Problem]) -> list[Problem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.line is None, p.line or 0))


class _Builder:
    """One validation pass over a parsed document; collects problems instead of stopping."""

    def __init__(self, src: Source, registry: Registry) -> None:
        self.src = src
        self.registry = registry
        self.problems: list[Problem] = []

    def add(self, message: str, *path: str | int, node: str | None = None, field: str | None = None) -> None:
        self.problems.append(Problem(message, file=self.src.file, line=self.src.line(*path) if path else None,
                                     node=node, field=field))

    def top_level(self) -> dict[str, Any] | None:
        data = self.src.data
        if not isinstance(data, dict):
            kind = "a list" if isinstance(data, list) else f"{type(data).__name__} {data!r}"[:60]
            self.add(f"the top level must be a mapping with 'version' and 'nodes', got {kind}")
            return None
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                close = difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.add(f"unknown top-level key '{key}' ({hint}known: {', '.join(TOP_LEVEL_KEYS)})", key)
        if "version" not in data:
            self.add("missing 'version' (write 'version: 1' at the top of the file)")
        else:
            version = data["version"]
            if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
                self.add(f"unsupported version {version!r} (this nodegraph reads version "
                         f"{', '.join(map(str, SUPPORTED_VERSIONS))})", "version")
        if not isinstance(data.get("description", ""), str):
            self.add("'description' must be text", "description")
        if not isinstance(data.get("metadata", {}), dict):
            self.add("'metadata' must be a mapping", "metadata")
        return data

    def node_bodies(self, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
        nodes = data.get("nodes")
        if nodes is None:
            self.add("missing 'nodes' (a mapping of node id -> {type: pack.name, <input>: <value>})")
            return {}
        if not isinstance(nodes, dict):
            kind = "a list" if isinstance(nodes, list) else type(nodes).__name__
            self.add(f"'nodes' must be a mapping of node id -> {{type: pack.name, ...}}, got {kind}", "nodes")
            return {}
        if not nodes:
            self.add("'nodes' is empty: the graph has nothing to run", "nodes")
        bodies = {}
        for node_id, body in nodes.items():
            if not ID_RE.match(node_id):
                self.add(f"invalid node id '{node_id}' (start with a letter or '_'; then letters, digits, "
                         f"'_' or '-')", "nodes", node_id, node=node_id)
                continue
            if not isinstance(body, dict):
                self.add(f"a node must be a mapping like {{type: core.number, value: 1}}, got "
                         f"{type(body).__name__} {body!r}"[:120], "nodes", node_id, node=node_id)
                continue
            bodies[node_id] = body
        return bodies

    def node_type(self, node_id: str, body: dict[str, Any]) -> NodeSpec | None:
        type_name = body.get("type")
        if type_name is None:
            self.add("missing 'type' (the node type, like core.number)", "nodes", node_id, node=node_id)
            return None
        if not isinstance(type_name, str):
            self.add(f"'type' must be a node type name, got {type_name!r}", "nodes", node_id, "type",
                     node=node_id, field="type")
            return None
        spec = self.registry.get(type_name)
        if spec is None:
            close = self.registry.closest(type_name)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            failed = self.registry.failed_pack(type_name)
            why = f"; pack '{failed.name}' failed to load, see `nodegraph plugins`" if failed else ""
            self.add(f"unknown node type '{type_name}' ({hint}see `nodegraph nodes`){why}", "nodes", node_id,
                     "type", node=node_id, field="type")
        return spec

    def param_values(self, decls: dict[str, ParamDecl], given: dict[str, Any]) -> dict[str, Any]:
        values = {}
        for name, decl in decls.items():
            if name in given:
                value, error = check_value(decl, given[name])
                if error:
                    self.add(f"--set {name}: {error}")
                    continue
            elif decl.has_default:
                value, error = check_value(decl, decl.default)
                if error:
                    continue  # reported with the declaration
            else:
                self.add(f"param '{name}' has no default: give it with --set {name}=...", "params", name)
                continue
            values[name] = value
        return values


def _params_read(bodies: Mapping[str, dict[str, Any]]) -> set[str]:
    used = set()
    for body in bodies.values():
        for key, value in body.items():
            if key == "type":
                continue
            for item in value if isinstance(value, list) else [value]:
                ref = read_ref(item)
                if isinstance(ref, ParamRef):
                    used.add(ref.name)
    return used


def build_plan(
    src: Source, registry: Registry, overrides: Mapping[str, Any], graph_file: Path | None
) -> tuple[Plan | None, list[Problem]]:
    """Validate parsed data; a `Plan` only when there are no problems."""
    b = _Builder(src, registry)
    data = b.top_level()
    if data is None:
        return None, b.problems
    decls, declared, param_problems = read_params(src)
    b.problems += param_problems
    bodies = b.node_bodies(data)
    ovr = split_overrides(overrides, decls, bodies, registry, src.file)
    b.problems += ovr.problems
    for name in sorted(declared - _params_read(bodies)) if bodies else ():
        b.add(f"param '{name}' is declared but never used (remove it, or read it as '${name}')",
              "params", name)
    run_bodies = copy.deepcopy(bodies)
    for (node_id, name), value in ovr.inputs.items():
        run_bodies[node_id][name] = value
    values = b.param_values(decls, ovr.params)

    specs: dict[str, NodeSpec | None] = {}
    drafts: dict[str, NodeDraft] = {}
    for node_id, body in run_bodies.items():
        spec = specs[node_id] = b.node_type(node_id, body)
        if spec is None:
            continue

        def report(message: str, field: str | None, _id: str = node_id) -> None:
            b.add(message, "nodes", _id, *([field] if field else []), node=_id, field=field)

        raw = {name: text for (nid, name), text in ovr.raw_text.items() if nid == node_id}
        drafts[node_id] = check_node_inputs(spec, body, values, declared, raw, report)
        for name in drafts[node_id].as_text:
            body[name] = escape(raw[name])  # so the resolved document reads back the same text

    dag = nx.DiGraph()
    order = {node_id: i for i, node_id in enumerate(bodies)}
    dag.add_nodes_from(bodies)
    links: dict[str, dict[str, Link | list[Link]]] = {}
    for node_id, draft in drafts.items():
        spec = specs[node_id]
        assert spec is not None
        links[node_id] = {}
        for name, refs in draft.links.items():
            for target in targets(refs):
                if target in bodies:
                    dag.add_edge(target, node_id)

            def report(message: str, field: str | None, _id: str = node_id) -> None:
                b.add(message, "nodes", _id, *([field] if field else []), node=_id, field=field)

            linked = link_input(refs, spec.inputs[name], specs, report)
            if linked is not None:
                links[node_id][name] = linked
    for cycle in find_cycles(dag, order):
        b.add(f"the graph has a cycle: {' -> '.join(cycle)} (a node cannot depend on its own output)",
              "nodes", cycle[0], node=cycle[0])
    if b.problems:
        return None, b.problems

    planned = {
        node_id: PlannedNode(node_id, spec, drafts[node_id].literals, links[node_id],
                             src.line("nodes", node_id))
        for node_id, spec in specs.items() if spec is not None
    }

    def report_fact(node_id: str, message: str, field: str | None) -> None:
        b.add(message, "nodes", node_id, *([field] if field else []), node=node_id, field=field)

    base_dir = graph_file.parent if graph_file else (Path(src.file).parent if src.file else Path.cwd())
    infer_facts(planned, dag, base_dir, report_fact)
    if b.problems:
        return None, b.problems
    resolved = _resolved(data, run_bodies, specs, decls, values)
    extra = {key: data[key] for key in ("metadata", "runtime") if key in data}
    plan = Plan(planned, dag, values, resolved, graph_file, data.get("description", ""), extra)
    return plan, []


def _resolved(
    data: dict[str, Any],
    bodies: dict[str, dict[str, Any]],
    specs: Mapping[str, NodeSpec | None],
    decls: Mapping[str, ParamDecl],
    values: Mapping[str, Any],
) -> dict[str, Any]:
    """The document as it runs (see the module docstring), as plain JSON data."""
    doc: dict[str, Any] = {"version": data["version"]}
    if data.get("description"):
        doc["description"] = data["description"]
    still_read = _params_read(bodies)
    params = {name: decl.as_document(values[name]) for name, decl in decls.items() if name in still_read}
    if params:
        doc["params"] = params
    nodes: dict[str, Any] = {}
    for node_id, body in bodies.items():
        spec = specs[node_id]
        out = copy.deepcopy(body)
        assert spec is not None
        for name, ispec in spec.inputs.items():
            if name in out or ispec.required or ispec.literal_adapter is None or not accepts_literal(ispec):
                continue
            try:
                default = ispec.literal_adapter.dump_python(ispec.default, mode="json")
            except (ValueError, TypeError):
                continue
            out[name] = escape(default)
        nodes[node_id] = out
    doc["nodes"] = nodes
    for key in ("metadata", "runtime"):
        if key in data:
            doc[key] = copy.deepcopy(data[key])
    return doc


__all__ = ["SUPPORTED_VERSIONS", "LinkRef", "load_plan"]
