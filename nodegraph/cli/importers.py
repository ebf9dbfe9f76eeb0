"""Importers: front-end helpers that turn another tool's workflow files into nodegraph graphs.

An importer is found through the entry-point group `nodegraph.importers` (name = the format, e.g.
`comfyui`) and is any object with `detect(path) -> bool` (is this file mine?), `convert(path) ->
dict` (a graph document; raises `NodegraphError` listing every problem; it may also accept
`model_dirs`, the run's model folders) and `label` (what to call the format in messages); optionally
`export(resolved_graph) -> dict` (the tool's own format) and `check(resolved_graph, file, model_dirs)`
(raises `NodegraphError` for what only the tool's conventions can check before a run, e.g. that every
model file a workflow names exists).
A converted graph may say which node of the source workflow each of its nodes stands for, as
`metadata: {source_ids: {node id: source id}}`: `nodegraph serve` reports progress and outputs to
clients of that tool (its ComfyUI API) under their own ids.
The engine never sees them: `run`, `validate`, `import` and `export` ask them.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any, Protocol

from nodegraph.errors import NodegraphError

ENTRY_POINT_GROUP = "nodegraph.importers"


class Importer(Protocol):
    """What an importer entry point provides."""

    label: str

    def detect(self, path: Path) -> bool: ...

    def convert(self, path: Path) -> dict[str, Any]: ...


def importers() -> dict[str, Importer]:
    """Installed importers by format name, in name order."""
    points = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    return {point.name: point.load() for point in points}


def named(name: str) -> Importer:
    """The importer for a format name; a `NodegraphError` listing the installed ones otherwise."""
    found = importers()
    if name not in found:
        known = ", ".join(found) or "none installed"
        raise NodegraphError(f"no importer for '{name}' (known: {known})")
    return found[name]


def detect(path: Path) -> tuple[str, Importer] | None:
    """(format, importer) of the first importer that recognises `path`, or None (a nodegraph file)."""
    if not path.is_file():
        return None
    for name, importer in importers().items():
        if importer.detect(path):
            return name, importer
    return None


def convert(importer: Importer, path: Path, model_dirs: tuple[Path, ...] = ()) -> dict[str, Any]:
    """`importer.convert(path)`, handing it the model folders when it takes them."""
    import inspect

    if "model_dirs" in inspect.signature(importer.convert).parameters:
        return importer.convert(path, model_dirs=model_dirs)  # type: ignore[call-arg]
    return importer.convert(path)


def check(path: Path, resolved: dict[str, Any], model_dirs: tuple[Path, ...]) -> None:
    """The importer's own pre-run check of a converted, resolved graph, when it has one."""
    found = detect(path)
    checker = getattr(found[1], "check", None) if found is not None else None
    if checker is not None:
        checker(resolved, path, model_dirs)
