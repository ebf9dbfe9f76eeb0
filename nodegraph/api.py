"""The public API for node packs. Packs import from here and nowhere else in the engine.

    from nodegraph.api import node, hookimpl, NodeContext, InputError, Image, Mask

Importing it is light (no torch): declaring nodes and building the registry never pay for the
libraries a node uses when it runs. Testing helpers are in `nodegraph.testing` (needs pytest).
"""

from __future__ import annotations

from nodegraph.document.facts import Fact, FactError, FactsRequest
from nodegraph.errors import InputError, NodegraphError
from nodegraph.images import Image, Mask
from nodegraph.nodes.hookspecs import hookimpl
from nodegraph.nodes.registry import PackRegistrar
from nodegraph.nodes.spec import node
from nodegraph.ports import InputFile, OutputFile, fingerprint_file
from nodegraph.runtime.context import NodeContext
from nodegraph.runtime.devices import format_size
from nodegraph.runtime.streaming import Streaming, StreamPlan

__all__ = [
    "Fact",
    "FactError",
    "FactsRequest",
    "Image",
    "InputError",
    "InputFile",
    "Mask",
    "NodeContext",
    "NodegraphError",
    "OutputFile",
    "PackRegistrar",
    "StreamPlan",
    "Streaming",
    "fingerprint_file",
    "format_size",
    "hookimpl",
    "node",
]
