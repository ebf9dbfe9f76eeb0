"""SD3 ControlNet units (`SD3ControlNetModel`: InstantX/Stability SD3 and SD3.5 canny, depth, tile,
pose), called as StableDiffusion3ControlNetPipeline calls them, so a sampler with units gives that
pipeline's pixels:
- the control image: normalised, resized, repeated to the batch and doubled for CFG, then VAE-encoded
  and sampled (from the sampler's second stream, standing for the pipeline's global RNG: see
  latent_control.py); `(sample - shift) * scaling_factor`, where the shift is 0 for nets with
  `force_zeros_for_pooled_projection` (the pipeline's rule);
- each step: the CFG-batched latents and `t.expand(batch)`, the prompt states if the net's config has a
  `joint_attention_dim` (else none), the pooled projections (zeros for `force_zeros_for_pooled_projection`
  nets), its residuals times `strength` on the steps of [start, end).
Several units sum their residuals in list order, as `SD3MultiControlNetModel` does.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch
from nodegraph_diffusion.conditions import SamplingSetup, StepInput

from nodegraph.api import InputError, NodeContext
from nodegraph_control.controlnet import keep
from nodegraph_control.latent_control import encode_sampled, prepare_pixels
from nodegraph_control.models import check_family, use_control_model
from nodegraph_control.units import ControlNetUnit


class ActiveSD3ControlNet:
    """An SD3 ControlNet unit during one sampler run: the model pinned, the control latents made."""

    def __init__(self, unit: ControlNetUnit, setup: SamplingSetup, ctx: NodeContext | None) -> None:
        from nodegraph_diffusion.loading import use_vae

        self.unit, self.setup = unit, setup
        self._stack = ExitStack()
        try:
            self.model = self._stack.enter_context(
                use_control_model(ctx, unit.model, "controlnet", setup.device, setup.dtype))
            check_family(setup.unet, self.model, unit.model, "controlnet")
            if unit.vae is None or ctx is None:
                raise InputError(f"SD3 ControlNet '{unit.model.path}' reads the control image VAE-encoded: "
                                 "give control.controlnet the model's vae", field="vae")
            zeros = bool(self.model.config.force_zeros_for_pooled_projection)
            with use_vae(ctx, unit.vae) as vae:
                image = prepare_pixels(unit.image.pixels, setup.width, setup.height, setup.batch_size, 8,
                                       setup.device, setup.dtype)
                if setup.do_cfg:
                    image = torch.cat([image] * 2)
                shift = 0.0 if zeros else float(vae.config.shift_factor or 0.0)
                self.cond = encode_sampled(vae, image, unit.draw_state, shift).to(setup.device, setup.dtype)
        except BaseException:
            self._stack.close()
            raise

    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        setup, unit, config = self.setup, self.unit, self.model.config
        kept = keep(step.step_index - setup.first_step, len(setup.timesteps), unit.start, unit.end)
        if kept == 0.0:
            return {}
        pooled = (setup.added_cond_kwargs or {})["pooled_projections"]
        if config.force_zeros_for_pooled_projection:
            pooled = torch.zeros_like(pooled)
        embeds = step.encoder_hidden_states if config.joint_attention_dim is not None else None
        latents = step.latent_model_input
        with torch.no_grad():
            blocks = self.model(hidden_states=latents, timestep=step.timestep.expand(latents.shape[0]),
                                encoder_hidden_states=embeds, pooled_projections=pooled,
                                joint_attention_kwargs=None, controlnet_cond=self.cond,
                                conditioning_scale=unit.strength * kept, return_dict=False)[0]
        return {"block_controlnet_hidden_states": list(blocks)}

    def close(self) -> None:
        self._stack.close()
