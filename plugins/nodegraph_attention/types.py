"""Port types of the attention pack, importable without torch.

The node catalogue (`nodes.py`) annotates its functions with these classes, so they load as light
as the catalogue: they hold tensors (`Any`) but import no library that makes them. Each condition's
`activate` imports its heavy half (`capture.py`, `p2p.py`) on first use; those modules re-export
these classes under their old names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodegraph_diffusion.conditions import ActiveCondition, Condition, SamplingSetup

from nodegraph.api import NodeContext


@dataclass(frozen=True, eq=False)
class AttentionMaps:
    """Captured cross-attention maps of one sampler run."""

    maps: Any  # torch.Tensor (B, tokens, h, w), float32 CPU; averaged over heads, layers, steps
    layers: int = 0  # how many layer calls were averaged
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttentionCapture(Condition):
    """A request to record cross-attention maps; the maps come back in the sampler's `Latents.extras`."""

    key: str = "attention_maps"
    resolutions: tuple[int, ...] = ()  # map heights to record (latent positions); () = every layer
    start: float = 0.0  # fraction of the schedule where recording starts
    end: float = 1.0  # ... and ends

    def activate(self, setup: SamplingSetup, ctx: NodeContext) -> ActiveCondition:
        from nodegraph_attention.capture import activate_capture

        return activate_capture(self, setup)


@dataclass(frozen=True, eq=False)
class P2PEdit(Condition):
    """A prompt-to-prompt edit of the batch [source, edited]; feed the sampler its pair conditioning."""

    mode: str
    pair_embeds: Any  # (2, tokens, dim): [source, edited], as the sampler must receive them
    mapper: Any  # replace: (L, L) float; refine/reweight: (L,) int64 source column per edited token
    alphas: Any  # refine/reweight: (L,) 1 where the edited token has a source counterpart; else None
    cross_ends: Any  # (L,) end fraction of cross-attention replacement per edited token
    self_replace: float
    equalizer: Any = None  # (L,) per edited token, or None
    blend_source: tuple[int, ...] = ()  # token positions of the local-blend words in the source
    blend_edited: tuple[int, ...] = ()
    blend_threshold: float = 0.3
    blend_start: float = 0.0

    @property
    def local_blend(self) -> bool:
        return bool(self.blend_source or self.blend_edited)

    def activate(self, setup: SamplingSetup, ctx: NodeContext) -> ActiveCondition:
        from nodegraph_attention.p2p import activate_edit

        return activate_edit(self, setup)
