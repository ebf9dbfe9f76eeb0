"""The `core` pack: values, images, files. Registered through the `nodegraph` entry-point group."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_register(registry: object) -> None:
    from nodegraph_core import image_nodes, mask_nodes, scale_nodes, value_nodes

    registry.add_module(value_nodes)  # type: ignore[attr-defined]
    registry.add_module(image_nodes)  # type: ignore[attr-defined]
    registry.add_module(mask_nodes)  # type: ignore[attr-defined]
    registry.add_module(scale_nodes)  # type: ignore[attr-defined]
