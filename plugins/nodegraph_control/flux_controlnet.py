"""Flux ControlNet units (`FluxControlNetModel`: InstantX, XLabs, Shakker-Labs Union-Pro), called as
FluxControlNetPipeline calls them, so a sampler with units gives that pipeline's pixels:
- the control image: normalised, resized to the generation size (latent_control.py); InstantX-style
  nets (no `input_hint_block`) read it VAE-encoded, sampled from the run's generator before the noise,
  and packed in 2x2 patches like the latents; XLabs-style nets read the pixels through their hint
  block (and the transformer then repeats their residuals over its blocks: `controlnet_blocks_repeat`);
- each step: the positive half's packed latents, `timestep / 1000`, the guidance (if the ControlNet's
  config has `guidance_embeds`), CLIP's pooled output and T5's states of the positive prompt, the
  text/image position ids; a union net also its control mode `(B, 1)`; its residuals times
  `strength`, on the steps of [start, end) (the pipeline's `controlnet_keep`). True CFG reuses the
  positive residuals for the negative call, as the pipeline does.
Several units sum their residuals in list order, as `FluxMultiControlNetModel` does (also one union
net given several images and modes). Outside its range a unit adds nothing (the pipeline adds zeros).
"""

from __future__ import annotations

from typing import Any

import torch
from nodegraph_diffusion.conditions import StepInput
from nodegraph_diffusion.flux_sampling import pack

from nodegraph.api import NodeContext
from nodegraph_control.latent_control import prepare_pixels
from nodegraph_control.transformer_units import ActiveTransformerControlNet

FLUX_GUIDANCE = 3.5  # the pipeline's guidance_scale default, for a guided ControlNet on an unguided model


class ActiveFluxControlNet(ActiveTransformerControlNet):
    """A Flux ControlNet unit during one sampler run: the model pinned, the control input prepared."""

    def prepare(self, ctx: NodeContext | None) -> None:
        setup, unit = self.setup, self.unit
        self.cond = self._control_input(ctx)
        self.mode = None
        if unit.mode is not None:
            self.mode = torch.tensor(unit.mode).to(setup.device, dtype=torch.long)
            self.mode = self.mode.view(-1, 1).expand(self.cond.shape[0], 1)

    def _control_input(self, ctx: NodeContext | None) -> torch.Tensor:
        setup, unit = self.setup, self.unit
        if self.model.input_hint_block is not None:  # XLabs: pixels into the hint block
            return prepare_pixels(unit.image.pixels, setup.width, setup.height, setup.batch_size, 16,
                                  setup.device, self.model.dtype)
        latents = self.encoded_control(ctx, 16, None, False,
                                       lambda vae: float(vae.config.shift_factor or 0.0))
        return pack(latents.to(device=setup.device, dtype=self.model.dtype))

    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        setup, unit = self.setup, self.unit
        kept = self.kept(step)
        if kept == 0.0:
            return {}
        family = setup.added_cond_kwargs or {}
        n = setup.batch_size
        latents = pack(step.latent_model_input[:n])
        timestep = step.timestep.expand(n).to(latents.dtype)
        guidance = None
        if self.model.config.guidance_embeds:
            guidance = family.get("guidance")
            if guidance is None:
                guidance = torch.full([1], FLUX_GUIDANCE, device=setup.device).expand(n)
        embeds = step.encoder_hidden_states
        text_ids = torch.zeros(embeds.shape[1], 3).to(device=latents.device, dtype=embeds.dtype)
        with torch.no_grad():
            blocks, single = self.model(
                hidden_states=latents, controlnet_cond=self.cond, controlnet_mode=self.mode,
                conditioning_scale=unit.strength * kept, timestep=timestep / 1000, guidance=guidance,
                pooled_projections=family["pooled"][-n:].clone(), encoder_hidden_states=embeds[-n:].clone(),
                txt_ids=text_ids, img_ids=family["img_ids"], joint_attention_kwargs={}, return_dict=False)
        return {"controlnet_block_samples": blocks, "controlnet_single_block_samples": single,
                "controlnet_blocks_repeat": self.model.input_hint_block is not None}
