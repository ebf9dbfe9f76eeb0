"""The `control` pack: ControlNet, T2I-Adapter, pose and edge preprocessors."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_register(registry: object) -> None:
    from nodegraph_control import kornia_nodes, nodes

    registry.add_module(nodes)  # type: ignore[attr-defined]
    registry.add_module(kornia_nodes)  # type: ignore[attr-defined]
