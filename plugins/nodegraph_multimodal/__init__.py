"""The `multimodal` pack: models that read and judge images — CLIP scoring and ranking, captioning, VQA.

Registered through the `nodegraph` entry-point group like every pack. Every node wraps a transformers
model users already have (a `CLIPModel` folder with its processor; BLIP captioning / question answering
with its `BlipProcessor`); transformers and torch are imported only inside node bodies.
"""

from __future__ import annotations

from nodegraph.api import PackRegistrar, hookimpl


@hookimpl
def nodegraph_register(registry: PackRegistrar) -> None:
    """Add the CLIP and the caption/VQA nodes."""
    from nodegraph_multimodal import caption_nodes, clip_nodes

    registry.add_module(clip_nodes)
    registry.add_module(caption_nodes)
