"""ControlNet units: a `Condition` that adds a ControlNet's residuals to the UNet call of each step.

Everything mirrors `StableDiffusionControlNetPipeline` operation for operation, so a sampler run with
units equals the pipeline on the same seed bit for bit (CPU fp32):
- the control image is prepared by `prepare_image` (diffusers' `VaeImageProcessor.preprocess` resized
  to the generation size, no normalisation; repeated to the batch; doubled for CFG unless guess mode);
- a unit acts on step `i` of the run's `n` timesteps unless `i/n < start` or `(i+1)/n > end`
  (the pipeline's `controlnet_keep`); its `conditioning_scale` is `strength`;
- guess mode (or a model with `global_pool_conditions`) runs the ControlNet on the conditional half
  only and feeds zeros to the unconditional half.
Several units are summed by the sampler in list order (first unit first), as `MultiControlNetModel`
sums its nets. Skipping a unit outside its range equals the pipeline's call with scale 0 (it adds
exact zeros).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch
from nodegraph_diffusion.conditions import SamplingSetup, StepInput

from nodegraph.api import InputError, NodeContext
from nodegraph_control.models import check_family, use_control_model
from nodegraph_control.units import ControlNetUnit  # the port type; kept importable from here

VAE_SCALE_FACTOR = 8


def prepare_image(
    pixels: torch.Tensor,
    width: int,
    height: int,
    batch_size: int,
    device: Any,
    dtype: Any,
    do_cfg: bool,
    guess_mode: bool,
) -> torch.Tensor:
    """The control image as the ControlNet pipeline's `prepare_image` makes it (B images per branch)."""
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(vae_scale_factor=VAE_SCALE_FACTOR, do_convert_rgb=True, do_normalize=False)
    image = processor.preprocess(pixels, height=height, width=width).to(dtype=torch.float32)
    image_batch = image.shape[0]
    if image_batch != 1 and batch_size % image_batch:
        raise InputError(
            f"a batch of {image_batch} control images does not fit {batch_size} latents", field="image"
        )
    image = image.repeat_interleave(batch_size // image_batch, dim=0)
    image = image.to(device=device, dtype=dtype)
    if do_cfg and not guess_mode:
        image = torch.cat([image] * 2)
    return image


def keep(step: int, total: int, start: float, end: float) -> float:
    """1.0 if the unit acts on step `step` of `total`, else 0.0 (the pipeline's `controlnet_keep`)."""
    return 1.0 - float(step / total < start or (step + 1) / total > end)


class ActiveControlNet:
    """A unit during one sampler run: the model pinned, the control image prepared."""

    def __init__(self, unit: ControlNetUnit, setup: SamplingSetup, ctx: NodeContext | None) -> None:
        self.unit = unit
        self.setup = setup
        self._stack = ExitStack()
        try:
            self.model = self._stack.enter_context(
                use_control_model(ctx, unit.model, "controlnet", setup.device, setup.dtype)
            )
            check_family(setup.unet, self.model, unit.model, "controlnet")
            self.guess_mode = bool(unit.guess_mode or self.model.config.global_pool_conditions)
            self.image = prepare_image(
                unit.image.pixels,
                setup.width,
                setup.height,
                setup.batch_size,
                setup.device,
                self.model.dtype,
                setup.do_cfg,
                self.guess_mode,
            )
        except BaseException:
            self._stack.close()
            raise

    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        setup, unit = self.setup, self.unit
        index = step.step_index - setup.first_step
        kept = keep(index, len(setup.timesteps), unit.start, unit.end)
        if kept == 0.0:
            return {}  # outside [start, end): the pipeline adds exact zeros here
        scale = unit.strength * kept
        added = setup.added_cond_kwargs  # SDXL ControlNets take the pooled embeds and time ids too
        if self.guess_mode and setup.do_cfg:
            # the conditional half only; fresh storage so kernels see the same alignment as the pipeline's
            control_input = step.latent_model_input.chunk(2)[1].clone()
            embeds = step.encoder_hidden_states.chunk(2)[1]
            added = None if added is None else {k: v.chunk(2)[1] for k, v in added.items()}
        else:
            control_input = step.latent_model_input
            embeds = step.encoder_hidden_states
        extra = {} if added is None else {"added_cond_kwargs": added}
        with torch.no_grad():
            down, mid = self.model(
                control_input,
                step.timestep,
                encoder_hidden_states=embeds,
                controlnet_cond=self.image,
                conditioning_scale=scale,
                guess_mode=self.guess_mode,
                return_dict=False,
                **extra,
            )
        if self.guess_mode and setup.do_cfg:
            down = [torch.cat([torch.zeros_like(d), d]) for d in down]
            mid = torch.cat([torch.zeros_like(mid), mid])
        return {"down_block_additional_residuals": list(down), "mid_block_additional_residual": mid}

    def close(self) -> None:
        self._stack.close()
