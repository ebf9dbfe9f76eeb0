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
        registry: a `nodegraph.api.PackRegistrar` bound to this pack; call
            `registry.add_module(module)` (every `@node`-tagged function in it) or
            `registry.add(function)`.

    Return: nothing.

    When it is called: once per plugin manager, when the registry is built: nodegraph's own packs
    first, then the others, each in entry-point name order. If it raises, declares a node that
    breaks the rules (no semver version, no docstring) or claims a node type an earlier pack
    declared, the whole pack is left out and `nodegraph plugins` says why.
    """
