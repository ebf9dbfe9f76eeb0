"""An example third-party node pack. Registered by the entry point `example` in group `nodegraph`."""

from __future__ import annotations

from nodegraph.api import PackRegistrar, hookimpl


@hookimpl
def nodegraph_register(registry: PackRegistrar) -> None:
    """Add every `@node` function of the pack's node modules."""
    from nodegraph_example import image_nodes, nodes

    registry.add_module(nodes)
    registry.add_module(image_nodes)
