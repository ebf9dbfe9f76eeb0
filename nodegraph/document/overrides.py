"""`--set` overrides: `param=value` sets a graph param, `node.input=value` replaces one node input.

String values are read as YAML scalars (`seed=3` gives the int 3, `prompt=a cat` stays text), except
for `str`/`path` params, which always take the text as given. A node-input override is exactly as if
the document said so: `--set sampler.seed=$seed` or `--set save.image=@other` work too.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodegraph.document.params import ParamDecl
from nodegraph.document.source import is_too_long_integer, parse_scalar, too_long_integer
from nodegraph.errors import Problem
from nodegraph.nodes.registry import Registry


@dataclass
class Overrides:
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[tuple[str, str], Any] = field(default_factory=dict)
    raw_text: dict[tuple[str, str], str] = field(default_factory=dict)  # the text before YAML reading
    problems: list[Problem] = field(default_factory=list)


def split_overrides(
    overrides: Mapping[str, Any],
    params: Mapping[str, ParamDecl],
    nodes: Mapping[str, Any],
    registry: Registry,
    file: str | None,
) -> Overrides:
    """Sort overrides into param values and node inputs; unknown targets become problems."""
    result = Overrides()
    for key, value in overrides.items():
        target = str(key)
        if target in params:
            decl = params[target]
            keep_text = decl.type in ("str", "path") and isinstance(value, str)
            if not keep_text and isinstance(value, str) and is_too_long_integer(value):
                result.problems.append(Problem(f"--set {target}: {too_long_integer(value)}", file=file))
                continue
            result.params[target] = value if keep_text or not isinstance(value, str) else parse_scalar(value)
            continue
        node_id, dot, name = target.partition(".")
        body = nodes.get(node_id) if dot else None
        if isinstance(body, dict) and name and "." not in name:
            error = _check_input_target(node_id, name, body, registry)
            if error:
                result.problems.append(Problem(f"unknown --set target '{target}': {error}", file=file))
                continue
            result.inputs[(node_id, name)] = parse_scalar(value) if isinstance(value, str) else value
            if isinstance(value, str):
                result.raw_text[(node_id, name)] = value
            continue
        result.problems.append(Problem(_unknown_target(target, params, nodes), file=file))
    return result


def _check_input_target(node_id: str, name: str, body: dict[str, Any], registry: Registry) -> str | None:
    if name == "type":
        return "the node type cannot be overridden"
    type_name = body.get("type")
    spec = registry.get(type_name) if isinstance(type_name, str) else None
    if spec is None or name in spec.inputs:
        return None  # an unknown node type is reported on the node itself
    close = difflib.get_close_matches(name, list(spec.inputs), n=1)
    hint = f"did you mean '{node_id}.{close[0]}'? " if close else ""
    names = ", ".join(spec.inputs)
    return f"node '{node_id}' ({spec.type_name}) has no input '{name}' ({hint}inputs: {names})"


def _unknown_target(target: str, params: Mapping[str, ParamDecl], nodes: Mapping[str, Any]) -> str:
    candidates = list(params) + [f"{n}." for n in nodes]
    close = difflib.get_close_matches(target, candidates, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(target.partition(".")[0], list(params) + list(nodes), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    names = ", ".join(params) or "none"
    return (f"unknown --set target '{target}' (params: {names}; or write node.input to set a node's input"
            f"{hint})")
