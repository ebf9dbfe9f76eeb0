"""Attention processors that let hooks read and edit attention probabilities, installed so they chain.

How a hooked layer computes (why it is built this way):
- The layer's output always comes from the processor that was installed before us (`inner`: diffusers'
  `AttnProcessor2_0`, an IP-Adapter processor, another condition's hook, ...). A hook that only *reads*
  (attention capture) therefore changes nothing, bit for bit.
- To read, we recompute the text/self attention probabilities with the standard diffusers maths
  (`to_q`/`to_k`, `head_to_batch_dim`, `get_attention_scores`, as `AttnProcessor` does).
- To *edit* (prompt-to-prompt), a hook returns target probabilities P'; we add the difference
  `to_out((P' - P) @ V) - to_out(0)` to the inner output. That equals running attention with P' (the
  output projection is affine), and is exactly zero where P' == P, so an identity edit reproduces the
  plain image exactly, and edits compose with whatever the inner processor adds (IP-Adapter image
  attention stays untouched).
Reading costs one extra q/k projection and softmax on hooked layers; layers no hook wants this step go
straight to `inner`.

Composition rule: `install_hooks` wraps *whatever processor each chosen layer has now* and remembers
it; `Installation.restore()` removes exactly its own wrappers, wherever they sit in a chain, so two
conditions that both install hooks may be closed in any order and the UNet ends with the processors
it had before either. The sampler closes conditions in `finally`, so this also holds when a step fails.
Every hook sees the layer's own probabilities (recomputed from q and k), not another hook's edit:
edits are added as output deltas, so a capture next to a prompt-to-prompt edit records the unedited
attention of both branches, whichever order the conditions come in.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Protocol

import torch

# where an installed IP-Adapter keeps its image projection (an IP-Adapter Plus Resampler has attention layers)
IMAGE_PROJECTION = "encoder_hid_proj."


@dataclass(frozen=True)
class AttnCall:
    """One call of one attention layer, as a hook sees it."""

    layer: str  # the processor's name in `unet.attn_processors`
    is_cross: bool
    height: int  # spatial size of the query map (latent positions at this layer)
    width: int
    batch: int  # full UNet batch (CFG-doubled when CFG is on)
    heads: int


class AttentionHook(Protocol):
    """What a hooked layer asks its hook."""

    def wants(self, call: AttnCall) -> bool:
        """Whether this call needs the attention probabilities (False: the layer runs untouched)."""
        ...

    def edit(self, call: AttnCall, probs: torch.Tensor) -> torch.Tensor | None:
        """See probs (batch, heads, queries, keys); return target probs to apply, or None to keep them."""
        ...


def _accepted_kwargs(processor: Any) -> frozenset[str] | None:
    """Keyword names the processor's `__call__` takes; None if it takes **kwargs (pass everything)."""
    params = inspect.signature(processor.__call__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return frozenset(params)


class HookedAttnProcessor:
    """Wraps one layer's processor; asks `hook` about each call (see the module docstring)."""

    def __init__(self, inner: Any, hook: AttentionHook, layer: str, latent_hw: tuple[int, int]) -> None:
        self.inner = inner
        self.hook = hook
        self.layer = layer
        self.latent_hw = latent_hw
        self._inner_kwargs = _accepted_kwargs(inner)

    # Named keyword parameters: diffusers passes only the cross_attention_kwargs a processor names.
    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        scale: float | None = None,
        ip_adapter_masks: Any = None,
    ) -> torch.Tensor:
        extra = {"temb": temb, "scale": scale, "ip_adapter_masks": ip_adapter_masks}
        extra = {k: v for k, v in extra.items() if v is not None}
        if self._inner_kwargs is not None:
            extra = {k: v for k, v in extra.items() if k in self._inner_kwargs}
        out = self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                         attention_mask=attention_mask, **extra)
        if hidden_states.ndim != 3:
            return out  # SD transformer blocks pass (B, N, C); other layouts are left alone
        if isinstance(encoder_hidden_states, tuple):  # IP-Adapter: (text, image embeds); hooks see text
            encoder_hidden_states = encoder_hidden_states[0]
        call = self._describe(attn, hidden_states, encoder_hidden_states)
        if not self.hook.wants(call):
            return out
        probs, value = _probs_and_value(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        target = self.hook.edit(call, probs.view(call.batch, call.heads, *probs.shape[1:]))
        if target is None:
            return out
        delta = torch.bmm(target.reshape(probs.shape).to(probs.dtype) - probs, value)
        delta = attn.batch_to_head_dim(delta)
        proj = attn.to_out[0]
        delta = proj(delta) - proj(torch.zeros_like(delta[:1, :1]))
        return out + delta / attn.rescale_output_factor

    def _describe(self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor | None) -> AttnCall:
        n = hidden_states.shape[1]
        lh, lw = self.latent_hw
        factor = round(((lh * lw) / n) ** 0.5) or 1  # downsampling factor of this level
        h, w = max(lh // factor, 1), max(lw // factor, 1)
        if h * w != n:  # odd sizes: fall back to a square guess
            h = w = round(n**0.5)
        return AttnCall(self.layer, context is not None, h, w, hidden_states.shape[0], attn.heads)


def _probs_and_value(
    attn: Any,
    hidden_states: torch.Tensor,
    context: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    temb: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention probabilities (batch*heads, queries, keys) and values, as diffusers' `AttnProcessor`."""
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    batch, seq_len, _ = hidden_states.shape if context is None else context.shape
    mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if context is None:
        context = hidden_states
    elif attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    key = attn.head_to_batch_dim(attn.to_k(context))
    value = attn.head_to_batch_dim(attn.to_v(context))
    probs = attn.get_attention_scores(attn.head_to_batch_dim(query), key, mask)
    return probs, value


class Installation:
    """Hooks installed on one UNet; `restore()` takes exactly them out again (idempotent, never raises)."""

    def __init__(self, unet: Any, wrappers: dict[str, HookedAttnProcessor]) -> None:
        self.unet = unet
        self.wrappers = wrappers

    def restore(self) -> None:
        if not self.wrappers:
            return
        current = dict(self.unet.attn_processors)
        for name, mine in self.wrappers.items():
            if name in current:  # a layer that left meanwhile (an IP-Adapter's projection) took `mine` along
                current[name] = _unwrap(current[name], mine)
        self.unet.set_attn_processor(current)
        self.wrappers = {}


def _unwrap(top: Any, mine: HookedAttnProcessor) -> Any:
    """`top`'s chain without `mine` (spliced out if another wrapper was installed over it later)."""
    if top is mine:
        return mine.inner
    node = top
    while isinstance(node, HookedAttnProcessor):
        if node.inner is mine:
            node.inner = mine.inner
            node._inner_kwargs = _accepted_kwargs(mine.inner)
            return top
        node = node.inner
    return top  # someone replaced the chain wholesale; leave their choice alone


def install_hooks(
    unet: Any,
    hook: AttentionHook,
    latent_hw: tuple[int, int],
    layers: str = "all",
) -> Installation:
    """Wrap the chosen attention layers' current processors with `hook` ("all", "cross" or "self")."""
    if layers not in ("all", "cross", "self"):
        raise ValueError(f"layers must be 'all', 'cross' or 'self', not {layers!r}")
    current = dict(unet.attn_processors)
    wrappers: dict[str, HookedAttnProcessor] = {}
    for name, proc in current.items():
        if name.startswith(IMAGE_PROJECTION):
            continue  # an IP-Adapter Plus projection's own attention: not over the image's positions
        is_cross = name.endswith("attn2.processor")
        if layers == "all" or (layers == "cross") == is_cross:
            wrappers[name] = HookedAttnProcessor(proc, hook, name, latent_hw)
    unet.set_attn_processor({**current, **wrappers})
    return Installation(unet, wrappers)


VAE_FACTOR = 8  # pixels per latent position of every SD-family VAE


def latent_size(setup: Any) -> tuple[int, int]:
    """(h, w) of the latents of a sampling run, from its pixel size."""
    return setup.height // VAE_FACTOR, setup.width // VAE_FACTOR
