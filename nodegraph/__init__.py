"""nodegraph: image generation written as typed node graphs — headless, scriptable, reproducible.

    import nodegraph
    result = nodegraph.run("graphs/core_text.yaml", name="Ada")   # overrides as keywords
    plan = nodegraph.load("graphs/core_text.yaml")

For several runs in one process keep an `Engine`, which holds the cache and the loaded models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodegraph.document.plan import Plan
from nodegraph.errors import GraphError, NodeFailed, NodegraphError
from nodegraph.runtime.context import RunOptions
from nodegraph.runtime.engine import Engine
from nodegraph.runtime.report import RunResult

__version__ = "0.1.0"


def load(path: Path | str, **overrides: Any) -> Plan:
    """Load and validate a graph with the installed packs (a fresh `Engine` each call)."""
    return Engine().load(path, overrides or None)


def run(path: Path | str, *, options: RunOptions | None = None, **overrides: Any) -> RunResult:
    """Run a graph once with the installed packs; keyword arguments override its params."""
    return Engine().run(path, overrides or None, options=options)


__all__ = ["Engine", "GraphError", "NodeFailed", "NodegraphError", "Plan", "RunOptions", "RunResult",
           "__version__", "load", "run"]
