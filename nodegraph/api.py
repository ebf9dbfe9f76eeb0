"""The public API for node packs. Packs import from here and nowhere else in the engine.

    from nodegraph.api import node, hookimpl, NodeContext, InputError
"""

from __future__ import annotations

from nodegraph.errors import InputError, NodegraphError
from nodegraph.nodes.hookspecs import hookimpl
from nodegraph.nodes.spec import node
from nodegraph.ports import InputFile, OutputFile, fingerprint_file
from nodegraph.runtime.context import NodeContext

__all__ = [
    "InputError",
    "InputFile",
    "NodeContext",
    "NodegraphError",
    "OutputFile",
    "fingerprint_file",
    "hookimpl",
    "node",
]
