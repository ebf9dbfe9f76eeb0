"""The Stable Diffusion x4 upscaler as a condition on the ordinary sampler.

stabilityai/stable-diffusion-x4-upscaler denoises latents *the size of the low-res picture* (its VAE
decodes 4x larger: three levels, scaling factor 0.08333) and reads the picture itself, noised, as three
more input channels (7 in all), with the amount of that noise as the UNet's `class_labels`.
`StableDiffusionUpscalePipeline` does, in this order: the picture to [-1, 1]; a draw of noise of the
picture's shape from the run's generator; `low_res_scheduler.add_noise(picture, noise, noise_level)`
(a DDPMScheduler of the model's own folder); then the latents' noise from the same generator; at every
step the noised picture appended to the scaled latent input (CFG-doubled) and `class_labels =
noise_level` per batch item. Here: the picture's draw is the condition's `before_noise` (taken from the
sampler's generator before its own noise), the channels go through the channel-concat step kwarg
(channel_concat.py) and the level through the `class_labels` step kwarg, so the loop and the family's
`denoise` run it unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from nodegraph_core.types import Image
from pydantic import Field

from nodegraph.api import FactsRequest, InputError, NodeContext, node
from nodegraph_diffusion.channel_concat import CONCAT_KWARG, repeat_to_batch
from nodegraph_diffusion.conditions import Condition, NoiseDraws, SamplingSetup, StepInput
from nodegraph_diffusion.types import Latents, UNetHandle

IMAGE_CHANNELS = 3  # the noised low-res picture: what the x4 upscaler's UNet reads besides its latents
MAX_NOISE_LEVEL = 350  # StableDiffusionUpscalePipeline's default max_noise_level (the x4 upscaler's)
SCALE = 4  # the upscaler's VAE: pixels per latent cell (the pipeline resizes pictures to multiples of it)


@dataclass(frozen=True, eq=False)
class UpscaleCondition(Condition):
    """The low-res picture (n, 3, H, W) in [-1, 1], CPU float32, the noise level and the model's
    low_res_scheduler config; `noised` is the picture after the pipeline's draw (set by before_noise)."""

    image: Any
    noise_level: int
    low_res_config: tuple[tuple[str, Any], ...]
    noised: Any = None

    def before_noise(self, draws: NoiseDraws) -> UpscaleCondition:
        """The pipeline's first draw: noise of the picture's shape, then `low_res_scheduler.add_noise`."""
        import torch
        from diffusers import DDPMScheduler

        from nodegraph_diffusion.sampling import draw_noise

        noise = draw_noise(tuple(self.image.shape), draws.generator, dtype=self.image.dtype)
        low_res = DDPMScheduler.from_config(dict(self.low_res_config))
        level = torch.tensor([self.noise_level], dtype=torch.long)
        return replace(self, noised=low_res.add_noise(self.image, noise, level))

    def activate(self, setup: SamplingSetup, ctx: NodeContext) -> ActiveUpscale:
        return ActiveUpscale(self, setup)


class ActiveUpscale:
    """The condition in one sampler run: the noised picture and its level at every step."""

    def __init__(self, spec: UpscaleCondition, setup: SamplingSetup) -> None:
        import torch

        if spec.noised is None:
            raise InputError("the x4 upscaler's condition draws its picture's noise before the sampler's "
                             "(as the pipeline does): sample with diffusion.sample and a diffusers "
                             "scheduler, not a k-sampler", field="conditions")
        family = setup.family
        reads = None if family is None else family.concat_channels(int(setup.unet.config.in_channels))
        if reads != IMAGE_CHANNELS:
            raise InputError(f"an x4-upscale condition adds {IMAGE_CHANNELS} input channels (the low-res "
                             f"picture), but this UNet has {setup.unet.config.in_channels} inputs and reads "
                             + ("none" if not reads else f"{reads}") + " besides its latents: load the x4 "
                             "upscaler (stabilityai/stable-diffusion-x4-upscaler, builtin:tinyworld-x4)",
                             field="conditions")
        image = spec.noised.to(device=setup.device, dtype=setup.dtype)
        cells = (setup.height // 8, setup.width // 8)  # the loop counts 8 pixels per cell; these are 1:1
        if tuple(image.shape[-2:]) != cells:
            raise InputError(f"the low-res picture is {image.shape[-1]}x{image.shape[-2]}, but the sampler's "
                             f"latents are {cells[1]}x{cells[0]}: start from the sd_upscale node's `latents`",
                             field="conditions")
        image = repeat_to_batch(image, setup.batch_size, "low-res pictures")
        branches = setup.guidance.branches if setup.guidance is not None else (2 if setup.do_cfg else 1)
        self.image = torch.cat([image] * branches) if branches > 1 else image
        self.levels = torch.full((self.image.shape[0],), spec.noise_level, dtype=torch.long,
                                 device=setup.device)

    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        return {CONCAT_KWARG: self.image, "class_labels": self.levels}

    def close(self) -> None:
        return None


class UpscaleOutputs(NamedTuple):
    latents: Latents  # empty latents of the low-res picture's size (the VAE decodes them 4x larger)
    condition: UpscaleCondition  # for diffusion.sample's `conditions`


def _facts(req: FactsRequest) -> dict[str, dict[str, Any]]:
    """Of the UNet's family; the condition adds 3 input channels (validation checks the UNet reads
    them, channel_facts.py)."""
    from nodegraph_diffusion.family_facts import passthrough

    part = {k: v for k, v in passthrough(req, {"out": "unet"})["out"].items()
            if k in ("family", "made_by")}
    return {"latents": {**part, "made_by": req.node},
            "condition": {**part, "concat": IMAGE_CHANNELS, "concat_for": "the x4 upscaler"}}


def low_res_scheduler_config(unet: UNetHandle) -> tuple[dict[str, Any], int]:
    """(the model's low_res_scheduler config, its max_noise_level) from its diffusers folder."""
    source = unet.source
    root = Path(source.path)
    file = root / "low_res_scheduler" / "scheduler_config.json"
    if source.format != "diffusers" or not file.is_file():
        raise InputError(f"'{root}' has no low_res_scheduler/scheduler_config.json: the x4 upscaler's "
                         "condition needs the model's own DDPM low-res scheduler (load the upscaler's "
                         "diffusers folder)", field="unet")
    index = json.loads((root / "model_index.json").read_text())
    return dict(json.loads(file.read_text())), int(index.get("max_noise_level", MAX_NOISE_LEVEL))


@node("diffusion.sd_upscale", version="1.0.0", facts=_facts)
def sd_upscale(
    unet: Annotated[UNetHandle, Field(description="The x4 upscaler's UNet (its folder has the low-res "
                                                  "scheduler)")],
    image: Annotated[Image, Field(description="Low-res picture to upscale 4x (sides multiples of 4)")],
    noise_level: Annotated[int, Field(ge=0, le=MAX_NOISE_LEVEL, description=(
        "Noise added to the picture before the UNet reads it (the pipeline's noise_level): more gives "
        "the model more freedom, less keeps closer to the picture"))] = 20,
) -> UpscaleOutputs:
    """Upscale a picture 4x with the Stable Diffusion x4 upscaler, as StableDiffusionUpscalePipeline does.

    Give `latents` to diffusion.sample and `condition` to its `conditions` (the prompt describes the
    picture; the pipeline's default cfg is 9), then decode with the upscaler's VAE: the picture comes out
    4x larger. The noise drawn for the picture comes from the sampler's seed, before its own noise."""
    import torch

    width, height = image.size
    if width % SCALE or height % SCALE:
        raise InputError(f"image is {width}x{height}; the x4 upscaler reads sides that are multiples of "
                         f"{SCALE} (resize or crop it first)", field="image")
    config, max_level = low_res_scheduler_config(unet)
    if noise_level > max_level:
        raise InputError(f"noise_level {noise_level} is above the model's max_noise_level {max_level}",
                         field="noise_level")
    pixels = 2.0 * image.pixels - 1.0  # VaeImageProcessor's normalize
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items()))
    empty = Latents(torch.zeros(image.batch, 4, height, width), family=unet.source.family)
    return UpscaleOutputs(empty, UpscaleCondition(pixels, int(noise_level), frozen))
