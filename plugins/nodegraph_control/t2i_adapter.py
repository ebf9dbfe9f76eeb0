"""T2I-Adapter units: a `Condition` that feeds an adapter's features into the UNet's down blocks.

Mirrors `StableDiffusionAdapterPipeline` and `StableDiffusionXLAdapterPipeline` (T2I-Adapter-XL): the
adapter runs once per sampler run on the control image (a tensor of the generation size is used as
is, other sizes are resized with Lanczos like the pipeline's PIL path; a one-channel adapter — canny,
sketch, lineart — gets the image as the pipeline gets a PIL image converted to "L"), its features are
multiplied by `weight` (`adapter_conditioning_scale`), tiled to the batch and doubled for CFG; every
step gets fresh clones as `down_intrablock_additional_residuals` (the UNet pops from that list and
adds in place). `end` is the SDXL adapter pipeline's `adapter_conditioning_factor`: the adapter acts
on the first `int(n * end)` of the run's `n` timesteps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from nodegraph_diffusion.conditions import ActiveCondition, SamplingSetup, StepInput

from nodegraph.api import InputError, NodeContext
from nodegraph_control.models import check_family, use_control_model
from nodegraph_control.units import AdapterUnit  # the port type; kept importable from here


def adapter_input(pixels: torch.Tensor, width: int, height: int, channels: int = 3) -> torch.Tensor:
    """The adapter's input: the image as is at the generation size, else Lanczos-resized (the pipeline's
    PIL path); for a one-channel adapter an RGB image becomes PIL's "L" (its luma, in 8 bits) first."""
    grey = channels == 1 and pixels.shape[1] == 3
    if tuple(pixels.shape[-2:]) == (height, width) and not grey:
        return pixels
    from diffusers.pipelines.t2i_adapter.pipeline_stable_diffusion_adapter import _preprocess_adapter_image
    from PIL import Image as PILImage

    arrays = (pixels.detach().cpu().float().clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round()
    images = [PILImage.fromarray(a.astype(np.uint8).squeeze(-1) if a.shape[-1] == 1 else a.astype(np.uint8))
              for a in arrays]
    return _preprocess_adapter_image([im.convert("L") for im in images] if grey else images, height, width)


def adapter_features(
    model: Any, pixels: torch.Tensor, setup: SamplingSetup, weight: float
) -> list[torch.Tensor]:
    """Adapter features scaled, batched and CFG-doubled exactly as the adapter pipeline does."""
    channels = int(model.config.in_channels)
    image = adapter_input(pixels, setup.width, setup.height, channels)
    image = image.to(device=setup.device, dtype=model.dtype)
    if image.shape[1] != channels:
        raise InputError(
            f"the T2I-Adapter takes {channels}-channel images, the control image has {image.shape[1]}",
            field="image",
        )
    factor = int(getattr(model, "total_downscale_factor", 8))
    if setup.height % factor or setup.width % factor:
        raise InputError(
            f"a T2I-Adapter needs width and height divisible by {factor}, got {setup.width}x{setup.height}",
            field="image",
        )
    with torch.no_grad():
        state = list(model(image))
    state = [v * weight for v in state]
    count = state[0].shape[0]
    if count != setup.batch_size:
        if setup.batch_size % count:
            raise InputError(
                f"a batch of {count} adapter images does not fit {setup.batch_size} latents", field="image"
            )
        state = [v.repeat(setup.batch_size // count, 1, 1, 1) for v in state]
    if setup.do_cfg:
        state = [torch.cat([v] * 2, dim=0) for v in state]
    return state


def activate_adapter(unit: AdapterUnit, setup: SamplingSetup, ctx: NodeContext) -> ActiveCondition:
    """`AdapterUnit.activate`: the adapter's features for this run (the model is released right after)."""
    with use_control_model(ctx, unit.model, "t2i_adapter", setup.device, setup.dtype) as model:
        check_family(setup.unet, model, unit.model, "t2i_adapter")
        state = adapter_features(model, unit.image.pixels, setup, unit.weight)
    return ActiveAdapter(state, int(len(setup.timesteps) * unit.end), setup.first_step)


class ActiveAdapter:
    """The adapter's features for one run (the model itself is released after computing them)."""

    def __init__(self, state: list[torch.Tensor], active_steps: int, first_step: int) -> None:
        self.state = state
        self.active_steps = active_steps
        self.first_step = first_step

    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        if step.step_index - self.first_step >= self.active_steps:
            return {}
        return {"down_intrablock_additional_residuals": [s.clone() for s in self.state]}

    def close(self) -> None:
        self.state = []
