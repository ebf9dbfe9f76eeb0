"""The `attention` pack: attention-map capture, prompt-to-prompt edits, IP-Adapter."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_register(registry: object) -> None:
    from nodegraph_attention import nodes

    registry.add_module(nodes)  # type: ignore[attr-defined]
