"""SD3 ControlNet units (`SD3ControlNetModel`: Stability's SD3.5-large canny/depth/blur, InstantX's SD3
canny/pose/tile), called as StableDiffusion3ControlNetPipeline calls them, so a sampler with units gives
that pipeline's pixels (tests/control/test_sd3_controlnet.py):
- the control image: normalised, resized, repeated to the batch and doubled for CFG, then VAE-encoded
  and sampled from the sampler's second stream, standing for the pipeline's global RNG (its only draw
  from it: `latent_dist.sample()` without a generator; see latent_control.py);
  `(sample - shift) * scaling_factor`, the shift 0 for nets with `force_zeros_for_pooled_projection`
  (the pipeline's rule);
- a net without a position embedding of its own (`use_pos_embed: false`, the SD3.5-large nets) gets a
  copy of the transformer's for the run, as the pipeline's constructor gives it one
  (`_get_pos_embed_from_transformer`); it is taken away again on close, as the net is shared;
- each step: the CFG-batched latents and `t.expand(batch)`, the prompt states if the net's config has a
  `joint_attention_dim` (else none), the pooled projections (zeros for `force_zeros_for_pooled_projection`
  nets), its residuals times `strength` on the steps of [start, end). The transformer adds them after
  each block but its last (`context_pre_only`), a net of fewer blocks' residuals spread over its blocks.
Several units sum their residuals in list order, as `SD3MultiControlNetModel` does. Each unit follows
its own net's config; the pipeline applies the first net's (pooled zeros, prompt states, VAE shift) to
all, which only matters for nets of different kinds, which it cannot run together anyway.
"""

from __future__ import annotations

from typing import Any

import torch
from nodegraph_diffusion.conditions import StepInput

from nodegraph.api import NodeContext
from nodegraph_control.transformer_units import ActiveTransformerControlNet

VAE_SCALE_FACTOR = 8  # the pipeline's image processor's


class ActiveSD3ControlNet(ActiveTransformerControlNet):
    """An SD3 ControlNet unit during one sampler run: the model pinned, the control latents made."""

    def prepare(self, ctx: NodeContext | None) -> None:
        setup, model = self.setup, self.model
        self.zeros = bool(model.config.force_zeros_for_pooled_projection)
        if model.config.get("use_pos_embed", True) is False:
            previous = model.pos_embed
            lent = model._get_pos_embed_from_transformer(setup.unet)
            model.pos_embed = lent.to(device=setup.device, dtype=model.dtype)
            self.defer(lambda: setattr(model, "pos_embed", previous))

        def shift(vae: Any) -> float:
            return 0.0 if self.zeros else float(vae.config.shift_factor or 0.0)

        cond = self.encoded_control(ctx, VAE_SCALE_FACTOR, setup.dtype, setup.do_cfg, shift)
        self.cond = cond.to(setup.device, setup.dtype)

    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        kept = self.kept(step)
        if kept == 0.0:
            return {}  # outside [start, end): the pipeline adds exact zeros
        pooled = (self.setup.added_cond_kwargs or {})["pooled_projections"]
        if self.zeros:
            pooled = torch.zeros_like(pooled)
        embeds = step.encoder_hidden_states if self.model.config.joint_attention_dim is not None else None
        latents = step.latent_model_input
        with torch.no_grad():
            blocks = self.model(hidden_states=latents, timestep=step.timestep.expand(latents.shape[0]),
                                encoder_hidden_states=embeds, pooled_projections=pooled,
                                joint_attention_kwargs=None, controlnet_cond=self.cond,
                                conditioning_scale=self.unit.strength * kept, return_dict=False)[0]
        return {"block_controlnet_hidden_states": list(blocks)}
