"""Prompt-to-prompt edits (Hertz et al. 2022): word swap, refinement, re-weighting, local blend.

As in the paper, one sampler run renders the batch [source, edited] from the *same* initial noise, and
a controller edits the edited prompt's attention while the source renders untouched:
- cross-attention: edited probs := alpha_t * mapped(source probs) + (1 - alpha_t) * edited probs, with
  `mapped` = word-swap matrix (replace), aligned columns (refine) or aligned columns times a per-token
  equalizer (reweight); alpha_t per token from `cross_replace` / `cross_replace_words`;
- self-attention: edited probs := source probs for steps < int(self_replace * steps), only in layers
  with at most (h/4)·(w/4) query positions (the paper's 16² at 512 px) — or, on a small latent where
  no layer is that coarse, in the UNet's coarsest attention layers (else self_replace would do nothing);
- local blend: after each scheduler step, latents[1] := latents[0] + mask · (latents[1] - latents[0]),
  mask = the chosen words' cross-attention (summed over steps so far, at the UNet resolution nearest
  latent/4), 3×3 max-pooled, normalised, > threshold, source mask OR edited mask.
Only the conditional half of classifier-free guidance is edited. Edits go through the chaining
processors of `processors.py`, so they compose with other conditions' hooks and adapters.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from nodegraph_diffusion.conditions import ActiveCondition, SamplingSetup, StepInput
from nodegraph_diffusion.types import Conditioning

from nodegraph.api import InputError
from nodegraph_attention import alignment
from nodegraph_attention.processors import AttnCall, Installation, install_hooks, latent_size
from nodegraph_attention.types import P2PEdit  # the port type, kept importable here

MODES = ("replace", "refine", "reweight")


def activate_edit(edit: P2PEdit, setup: SamplingSetup) -> ActiveCondition:
    """`P2PEdit.activate`: check the sampler got this edit's pair, then hook every attention layer."""
    if setup.batch_size != 2:
        raise InputError(
            f"prompt_to_prompt renders [source, edited] in one batch, but the sampler got "
            f"{setup.batch_size} prompt(s): connect the sampler's `positive` to this node's `positive`",
            field="conditions",
        )
    cond = setup.prompt_embeds[-2:]
    pair = edit.pair_embeds.to(device=cond.device, dtype=cond.dtype)
    if cond.shape != pair.shape or not torch.equal(cond, pair):
        raise InputError(
            "prompt_to_prompt: the sampler's positive conditioning is not this edit's [source, edited] "
            "pair: connect the sampler's `positive` to the prompt_to_prompt node's `positive` output",
            field="conditions",
        )
    unit = _Controller(edit, setup)
    unit.installation = install_hooks(setup.unet, unit, unit.latent_hw, layers="all")
    return unit


def make_edit(
    tokenizer: Any,
    source: Conditioning,
    edited: Conditioning,
    mode: str,
    cross_replace: float = 0.8,
    cross_replace_words: dict[str, float] | None = None,
    self_replace: float = 0.4,
    reweight: dict[str, float] | None = None,
    local_blend: list[str] | None = None,
    blend_threshold: float = 0.3,
    blend_start: float = 0.0,
) -> P2PEdit:
    """Align the prompts and build the edit; raises ValueError on prompts the mode cannot align."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if source.embeds.shape[0] != 1 or edited.embeds.shape[0] != 1:
        raise ValueError("source and edited must each be one prompt")
    if source.embeds.shape != edited.embeds.shape:
        raise ValueError("source and edited conditioning have different shapes (different encoders?)")
    length = int(source.embeds.shape[1])
    src, dst = source.prompt, edited.prompt
    if mode == "replace":
        mapper, alphas = alignment.replacement_mapper(tokenizer, src, dst, length), None
    else:
        mapper, alphas = alignment.refinement_mapper(tokenizer, src, dst, length)
    eq = alignment.equalizer(tokenizer, dst, reweight, length) if reweight else None
    if mode == "reweight" and eq is None:
        raise ValueError("mode 'reweight' needs `reweight` words and scales, e.g. {smiling: 5}")
    words = local_blend or []
    blend_src = [i for w in words for i in alignment.word_token_indices(tokenizer, src, w, length)]
    blend_dst = [i for w in words for i in alignment.word_token_indices(tokenizer, dst, w, length)]
    if words and not (blend_src or blend_dst):
        raise ValueError(f"none of the local-blend words {words} is a word of either prompt")
    return P2PEdit(
        mode=mode,
        pair_embeds=torch.cat([source.embeds, edited.embeds]).detach().cpu(),
        mapper=mapper,
        alphas=alphas,
        cross_ends=alignment.cross_replace_ends(tokenizer, dst, cross_replace, cross_replace_words or {},
                                                length),
        self_replace=float(self_replace),
        equalizer=eq,
        blend_source=tuple(sorted(set(blend_src))),
        blend_edited=tuple(sorted(set(blend_dst))),
        blend_threshold=float(blend_threshold),
        blend_start=float(blend_start),
    )


def pair_conditioning(source: Conditioning, edited: Conditioning) -> Conditioning:
    """The batch [source, edited] the sampler renders (prompt/token ids: the source's)."""
    return Conditioning(
        embeds=torch.cat([source.embeds, edited.embeds]),
        prompt=source.prompt,
        token_ids=source.token_ids,
        pooled=None if source.pooled is None else torch.cat([source.pooled, edited.pooled]),
        family=source.family,
        micro=source.micro,
    )


def _attention_sides(unet: Any, latent_h: int) -> list[int]:
    """Heights of the UNet's cross-attention maps, from its block layout."""
    sides = {
        latent_h // 2**i
        for i, kind in enumerate(unet.config.down_block_types)
        if "CrossAttn" in kind
    }
    if "CrossAttn" in str(unet.config.mid_block_type):
        sides.add(latent_h // 2 ** (len(unet.config.down_block_types) - 1))
    return sorted(sides) or [latent_h]


class _Controller:
    """The live edit: an attention hook plus latent hooks (same noise, local blend)."""

    def __init__(self, spec: P2PEdit, setup: SamplingSetup) -> None:
        self.spec = spec
        self.setup = setup
        self.latent_hw = latent_size(setup)
        lh, lw = self.latent_hw
        steps = setup.num_steps
        self.alpha = alignment.cross_replace_alpha(spec.cross_ends, steps)  # (steps+1, L)
        self.self_stop = int(steps * spec.self_replace)
        sides = _attention_sides(setup.unet, lh)
        coarsest = min(sides) * min(sides) * lw // max(lh, 1)
        self.self_max_positions = max((lh // 4) * (lw // 4), coarsest)
        self.blend_h = min(sides, key=lambda s: (abs(s - lh / 4), -s))
        self.blend_first = int(spec.blend_start * steps)
        self.blend_sum: torch.Tensor | None = None
        self.step_index = 0
        self.installation: Installation | None = None

    # ActiveCondition
    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        self.step_index = step.step_index
        return {}

    def close(self) -> None:
        if self.installation is not None:
            self.installation.restore()

    def prepare_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Both prompts start from the source's noise (the paper reuses one x_T)."""
        out = latents.clone()
        out[1:] = latents[:1]
        return out

    def after_step(self, step: StepInput, latents: torch.Tensor) -> torch.Tensor | None:
        if not self.spec.local_blend or self.blend_sum is None or step.step_index < self.blend_first:
            return None
        maps = F.max_pool2d(self.blend_sum[:, None], kernel_size=3, stride=1, padding=1)
        maps = F.interpolate(maps, size=latents.shape[2:])
        peak = maps.amax(dim=(2, 3), keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)
        hit = (maps / peak).gt(self.spec.blend_threshold)
        mask = (hit[:1] | hit[1:]).to(latents.dtype).to(latents.device)
        out = latents.clone()
        out[1:] = latents[:1] + mask * (latents[1:] - latents[:1])
        return out

    # AttentionHook
    def wants(self, call: AttnCall) -> bool:
        if call.is_cross:
            blend = self.spec.local_blend and call.height == self.blend_h
            return blend or bool(self.alpha[self._row()].any())
        return self.step_index < self.self_stop and call.height * call.width <= self.self_max_positions

    def edit(self, call: AttnCall, probs: torch.Tensor) -> torch.Tensor | None:
        off = call.batch // 2 if self.setup.do_cfg else 0
        source, edited = probs[off], probs[off + 1]
        if not call.is_cross:
            target = probs.clone()
            target[off + 1] = source
            return target
        alpha = self.alpha[self._row()].to(probs.device, probs.dtype)
        target = None
        new = edited
        if bool(alpha.any()):
            new = self._mapped(source, edited) * alpha + edited * (1 - alpha)
            target = probs.clone()
            target[off + 1] = new
        if self.spec.local_blend and call.height == self.blend_h:
            self._collect(call, source, new)
        return target

    def _row(self) -> int:
        return min(self.step_index, self.alpha.shape[0] - 1)

    def _mapped(self, source: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
        """Source attention (heads, queries, tokens) moved onto the edited prompt's token columns."""
        spec = self.spec
        if spec.mode == "replace":
            mapped = torch.einsum("hpw,wn->hpn", source, spec.mapper.to(source.device, source.dtype))
        else:
            alphas = spec.alphas.to(source.device, source.dtype)
            mapped = source[:, :, spec.mapper.to(source.device)] * alphas + edited * (1 - alphas)
        if spec.equalizer is not None:
            mapped = mapped * spec.equalizer.to(source.device, source.dtype)
        return mapped

    def _collect(self, call: AttnCall, source: torch.Tensor, edited: torch.Tensor) -> None:
        """Add this layer's local-blend word maps (summed over heads and words) to the running sum."""
        maps = []
        for probs, inds in ((source, self.spec.blend_source), (edited, self.spec.blend_edited)):
            m = probs[:, :, list(inds)].sum(dim=(0, 2)) if inds else probs.new_zeros(probs.shape[1])
            maps.append(m.float().reshape(call.height, call.width))
        stacked = torch.stack(maps).detach().cpu()
        self.blend_sum = stacked if self.blend_sum is None else self.blend_sum + stacked
