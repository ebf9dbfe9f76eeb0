"""The node contract that docs/plugins.md promises, as checks a pack's own tests run.

The registry already refuses the two rules that would corrupt caches or help pages (a semver
version, a docstring); these checks add the ones that make a node pleasant to use and that the
registry leaves to the author: a description on every input, a one-line summary, a `pack.name`
type name under the pack's own prefix, a declared output type, and literal defaults that pass the
input's own validation (a default outside its range fails only when a graph leaves it out).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import typing

from pydantic import ValidationError

from nodegraph.nodes.registry import PackSource, Registry, build_registry
from nodegraph.nodes.spec import MISSING, SEMVER, NodeSpec

TYPE_NAME = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")


def _default_problem(spec: NodeSpec, name: str) -> str | None:
    inp = spec.inputs[name]
    if inp.default is MISSING or (inp.default is None and inp.optional):
        return None
    if inp.literal_adapter is None:
        return f"{spec.type_name}: input '{name}' takes links only, so it cannot have a default"
    try:
        inp.literal_adapter.validate_python(inp.default)
    except ValidationError as exc:
        reason = exc.errors()[0].get("msg", str(exc))
        return f"{spec.type_name}: default {inp.default!r} of input '{name}' is not a valid value: {reason}"
    return None


def node_problems(spec: NodeSpec) -> list[str]:
    """Every contract rule this node breaks, one message each naming the node and the input."""
    problems = []
    name = spec.type_name
    if not TYPE_NAME.fullmatch(name):
        problems.append(f"{name}: type name must look like 'pack.node' (lower case, digits, '_')")
    elif spec.pack and name.partition(".")[0] != spec.pack:
        problems.append(f"{name}: type name must start with its pack's name '{spec.pack}.'")
    if not SEMVER.fullmatch(spec.version):
        problems.append(f"{name}: version {spec.version!r} is not semver MAJOR.MINOR.PATCH like '1.0.0'")
    lines = spec.doc.splitlines()
    if not lines or not lines[0].strip():
        problems.append(f"{name}: no docstring (its first line is the description in `nodegraph nodes`)")
    elif len(lines) > 1 and lines[1].strip():
        problems.append(f"{name}: the docstring's summary must fit on its first line (then a blank line)")
    for inp in spec.inputs.values():
        if not inp.description.strip():
            problems.append(f"{name}: input '{inp.name}' has no description "
                            "(Annotated[T, Field(description=...)])")
        problem = _default_problem(spec, inp.name)
        if problem:
            problems.append(problem)
    problems += [f"{name}: output '{out.name}' has no declared type (annotate the return value)"
                 for out in spec.outputs.values() if out.type is typing.Any]
    return problems


def pack_source(name: str, module: str, version: str | None = None) -> PackSource:
    """A source for the pack in `module` (imported when the registry is built), no installation needed.

    The version defaults to the installed distribution's version of the module's top package, else 0.0.0.
    """
    if version is None:
        dists = importlib.metadata.packages_distributions().get(module.partition(".")[0], [])
        version = importlib.metadata.version(dists[0]) if dists else "0.0.0"
    return PackSource(name, version, module, lambda: importlib.import_module(module))


def pack_registry(*sources: PackSource) -> Registry:
    """A registry of exactly these packs; fails (AssertionError with the reason) if any is left out."""
    registry = build_registry(sources)
    failed = [f"pack '{p.name}' failed to load: {p.error}" for p in registry.packs if p.error]
    if failed:
        raise AssertionError("\n".join(failed))
    return registry


def contract_problems(source: PackSource, *others: PackSource) -> list[str]:
    """What breaks the contract in the pack of `source` (loaded after `others`, e.g. packs it builds on)."""
    registry = build_registry([*others, source])
    info = next(p for p in registry.packs if p.name == source.name)
    if info.error:
        return [f"pack '{info.name}' failed to load: {info.error}"]
    if not info.node_types:
        return [f"pack '{info.name}' registers no node types"]
    return [problem for type_name in info.node_types for problem in node_problems(registry.specs[type_name])]


def assert_contract(source: PackSource, *others: PackSource) -> None:
    """Fail with every broken rule listed if the pack of `source` breaks the node contract."""
    problems = contract_problems(source, *others)
    if problems:
        raise AssertionError(f"{len(problems)} contract problem(s):\n" + "\n".join(problems))


__all__ = ["assert_contract", "contract_problems", "node_problems", "pack_registry", "pack_source"]
