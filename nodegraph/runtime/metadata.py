"""What every output carries about how it was made: the resolved graph, its params and the versions
of everything involved. `nodegraph run image.png` reads it back from the PNG and runs it again.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import platform
from pathlib import Path
from typing import Any

from nodegraph.document.plan import Plan, file_literals
from nodegraph.nodes.registry import Registry

METADATA_KEY = "nodegraph"  # the PNG text chunk holding the metadata as JSON


@functools.lru_cache(maxsize=64)  # installed versions do not change while a process runs; ~1 ms each
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(registry: Registry) -> dict[str, Any]:
    """Versions of nodegraph, each loaded pack, torch, diffusers, transformers and Python."""
    return {
        "nodegraph": _version("nodegraph"),
        "packs": {p.name: p.version for p in registry.packs if p.error is None},
        "torch": _version("torch"),
        "diffusers": _version("diffusers"),
        "transformers": _version("transformers"),
        "python": platform.python_version(),
    }


def _absolute_inputs(plan: Plan, graph: dict[str, Any]) -> dict[str, Any]:
    """Make the input files a graph reads absolute, so the graph still runs from the PNG's folder."""
    nodes = graph.get("nodes")
    if not isinstance(nodes, dict):
        return graph
    for lit in file_literals(plan):
        doc = nodes.get(lit.node)
        if not isinstance(doc, dict) or doc.get(lit.field) != lit.value or lit.value.startswith("builtin:"):
            continue
        if not Path(lit.value).expanduser().is_absolute() and lit.path.exists():
            doc[lit.field] = str(lit.path.resolve())
    return graph


def run_metadata(plan: Plan, registry: Registry) -> dict[str, Any]:
    """The metadata of one run: `graph` (loadable by `load_plan`), `params`, `versions`, `source`,
    and `inputs`, the files it reads with their fingerprints (`png_inputs`: found again on re-run)."""
    from nodegraph.runtime.png_inputs import record_inputs

    graph = _absolute_inputs(plan, copy.deepcopy(plan.resolved))
    return {
        "graph": graph,
        "params": copy.deepcopy(plan.params),
        "versions": versions(registry),
        "source": str(plan.file.resolve()) if plan.file else None,
        "inputs": record_inputs(plan),
    }


def graph_from_png(path: Path) -> dict[str, Any] | None:
    """The graph embedded in a PNG written by `core.save_image`, or None when it has none."""
    data = metadata_from_png(path)
    graph = data.get("graph") if data else None
    return graph if isinstance(graph, dict) else None


def metadata_from_png(path: Path) -> dict[str, Any] | None:
    """All the metadata a PNG written by `core.save_image` carries, or None when it has none."""
    import json

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            text = getattr(im, "text", {}).get(METADATA_KEY) or im.info.get(METADATA_KEY)
    except (OSError, UnidentifiedImageError):
        return None
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
