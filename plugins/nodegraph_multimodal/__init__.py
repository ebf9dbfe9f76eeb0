"""The multimodal pack: models that read and judge images — CLIP scoring and ranking, captioning, VQA.

One distribution, three node namespaces, so three entry points in the `nodegraph` group (a pack's node
types start with its name): `clip` (clip.load/score/rank/contact_sheet), `caption` (caption.load/generate)
and `vqa` (vqa.answer). Every node wraps a transformers model users already have (a `CLIPModel` folder
with its processor; BLIP captioning / question answering with its `BlipProcessor`); transformers and
torch are imported only inside node bodies.
"""

from __future__ import annotations

from nodegraph.api import PackRegistrar, hookimpl


class _Pack:
    """One entry point's plugin object: registers the node modules it names (imported on registration)."""

    def __init__(self, *modules: str) -> None:
        self.modules = modules

    @hookimpl
    def nodegraph_register(self, registry: PackRegistrar) -> None:
        """Add every `@node` function of this namespace's modules."""
        import importlib

        for name in self.modules:
            registry.add_module(importlib.import_module(name))


CLIP = _Pack("nodegraph_multimodal.clip_nodes")
CAPTION = _Pack("nodegraph_multimodal.caption_nodes")
VQA = _Pack("nodegraph_multimodal.vqa_nodes")
