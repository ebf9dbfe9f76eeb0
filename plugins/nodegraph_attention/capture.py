"""Attention-map capture: which image regions each prompt token attended to during sampling.

How the maps leave the sampler (and why this is cache-safe):
conditions are values flowing *into* the sampler, and the engine caches node outputs by what produced
them, so a capture object that the sampler fills in place would be empty whenever the sampler is
served from the cache (a second run, a disk-cache hit, another process). So `AttentionCapture` is an
immutable *request*; its active unit records maps while the sampler runs and hands them back through
the optional `results()` hook, which the sampler merges into its output `Latents.extras` under
`capture.key`. The maps are therefore part of the sampler's output value: cached with it, keyed by
everything that produced it, and `attention.maps_to_images` simply reads them from the latents it is
given — which also makes it run after the sampler. Two captures in one sampler use distinct keys (the
node id of the capture node by default).

What is recorded: cross-attention probabilities of the conditional (text) half of classifier-free
guidance, averaged over heads, layers and steps, per token: `AttentionMaps.maps` (B, tokens, h, w),
where (h, w) is the largest resolution captured; smaller layers are upsampled (bilinear) to it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from nodegraph_diffusion.conditions import ActiveCondition, SamplingSetup, StepInput

from nodegraph_attention.processors import AttnCall, Installation, install_hooks, latent_size
from nodegraph_attention.types import AttentionCapture, AttentionMaps  # port types, kept importable here


def activate_capture(spec: AttentionCapture, setup: SamplingSetup) -> ActiveCondition:
    """`AttentionCapture.activate`: a recorder hooked into the sampler's UNet for this run."""
    recorder = _Recorder(spec, setup)
    recorder.installation = install_hooks(setup.unet, recorder, latent_size(setup), layers="cross")
    return recorder


class _Recorder:
    """The live unit: a read-only attention hook summing maps per resolution."""

    def __init__(self, spec: AttentionCapture, setup: SamplingSetup) -> None:
        self.spec = spec
        self.setup = setup
        self.step_index = -1
        self.sums: dict[tuple[int, int], torch.Tensor] = {}
        self.counts: dict[tuple[int, int], int] = {}
        self.installation: Installation | None = None
        n = setup.num_steps
        self.first, self.stop = int(spec.start * n), max(int(spec.end * n), int(spec.start * n) + 1)

    # ActiveCondition
    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        self.step_index = step.step_index
        return {}

    def close(self) -> None:
        if self.installation is not None:
            self.installation.restore()

    def results(self) -> dict[str, Any]:
        if not self.sums:
            return {self.spec.key: AttentionMaps(torch.zeros(0), 0)}
        size = max(self.sums, key=lambda hw: hw[0] * hw[1])
        total = torch.zeros_like(self.sums[size])
        for hw, s in self.sums.items():
            total += s if hw == size else F.interpolate(s, size=size, mode="bilinear", align_corners=False)
        count = sum(self.counts.values())
        return {self.spec.key: AttentionMaps(total / count, count, {"size": size})}

    # AttentionHook
    def wants(self, call: AttnCall) -> bool:
        if not call.is_cross or not (self.first <= self.step_index < self.stop):
            return False
        return not self.spec.resolutions or call.height in self.spec.resolutions

    def edit(self, call: AttnCall, probs: torch.Tensor) -> None:
        cond = probs[call.batch // 2:] if self.setup.do_cfg else probs
        maps = cond.float().mean(dim=1)  # (B, queries, tokens)
        maps = maps.transpose(1, 2).reshape(maps.shape[0], maps.shape[2], call.height, call.width)
        hw = (call.height, call.width)
        maps = maps.detach().cpu()
        self.sums[hw] = self.sums[hw] + maps if hw in self.sums else maps.clone()
        self.counts[hw] = self.counts.get(hw, 0) + 1
        return None
