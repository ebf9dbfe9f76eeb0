"""An example third-party node pack. Registered by the entry point `example` in group `nodegraph`."""

from __future__ import annotations

from typing import Any

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_register(registry: Any) -> None:
    """Add every `@node` function of `nodegraph_example.nodes`."""
    from nodegraph_example import nodes

    registry.add_module(nodes)
