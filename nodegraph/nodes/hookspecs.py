"""The hooks a node pack may implement. Entry-point group: `nodegraph`.

Every hook takes keyword arguments only and has a `nodegraph_` prefix. A pack may accept fewer
arguments than a hook offers, so adding an argument later never breaks an existing pack.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "nodegraph"
ENTRY_POINT_GROUP = "nodegraph"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def nodegraph_register(registry: Any) -> None:
    """Contribute node types to the registry.

    What it is for: the one place a pack declares its nodes.

    Arguments:
        registry: a `nodegraph.nodes.registry.PackRegistrar` bound to this pack; call
            `registry.add_module(module)` (every `@node`-tagged function in it) or
            `registry.add(function)`.

    Return: nothing.

    When it is called: once per plugin manager, when the registry is built, packs in entry-point
    name order. If it raises, the whole pack is left out and reported by `nodegraph plugins`.
    """
