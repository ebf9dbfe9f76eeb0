"""The control image of a transformer ControlNet (Flux, SD3), prepared as their pipelines prepare it.

Both pipelines normalise the control image to [-1, 1] (`VaeImageProcessor`, resized to the generation
size), repeat it to the batch and, for InstantX-style Flux ControlNets and every SD3 ControlNet, encode
it with the model's VAE and *sample* the latent distribution: `(latents - shift) * scaling_factor`.
Where the sample's random draws come from differs, and decides which pixels a seed gives:
- FluxControlNetPipeline samples from the run's generator, before it draws the initial noise (one
  draw of the latents' shape per ControlNet, in list order);
- the SD3 ControlNet pipeline calls `latent_dist.sample()` without a generator: torch's global stream.
  Here that stream is the sampler's second generator seeded with the same seed (`NoiseDraws.side`), so
  a seed still gives one image, the pipeline's after `torch.manual_seed(seed)`; with CFG it encodes the
  image twice (the doubled batch), so it draws twice the latents' batch.
`take_draws` runs before the noise (the sampler's `before_noise` hook): it keeps the generator's state
and takes the draws the encoding will take, so the noise after them is the pipeline's; the encoding
later replays that state through diffusers' own `retrieve_latents`.
"""

from __future__ import annotations

from typing import Any

import torch
from nodegraph_diffusion.conditions import NoiseDraws
from nodegraph_diffusion.sampling import draw_noise

from nodegraph.api import InputError


def take_draws(model_class: str, draws: NoiseDraws) -> torch.Tensor:
    """The state of the stream this class's pipeline samples its control latents from, after which the
    draws are taken (so the stream goes on as the pipeline's does)."""
    batch, *rest = draws.latent_shape
    if model_class == "SD3ControlNetModel":
        generator, shape = draws.side, (batch * (2 if draws.do_cfg else 1), *rest)
    else:
        generator, shape = draws.generator, (batch, *rest)
    state = generator.get_state()
    draw_noise(shape, generator)
    return state


def prepare_pixels(pixels: torch.Tensor, width: int, height: int, batch_size: int, scale_factor: int,
                   device: Any, dtype: Any) -> torch.Tensor:
    """The pipelines' `prepare_image` on an image as they get it from a PIL picture: normalised to
    [-1, 1], channels-last (the layout `pil_to_numpy` leaves; the VAE's convolutions sum in another
    order on the other layout), repeated to the batch, without the CFG doubling (callers add it)."""
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(vae_scale_factor=scale_factor)
    image = processor.preprocess(pixels, height=height, width=width).to(dtype=torch.float32)
    image = image.contiguous(memory_format=torch.channels_last)
    count = image.shape[0]
    if count != 1 and batch_size % count:
        raise InputError(f"a batch of {count} control images does not fit {batch_size} latents",
                         field="image")
    return image.repeat_interleave(batch_size // count, dim=0).to(device=device, dtype=dtype)


def encode_sampled(vae: Any, image: torch.Tensor, state: torch.Tensor | None, shift: float) -> torch.Tensor:
    """`(sample - shift) * scaling_factor` of the VAE's latent distribution, the sample drawn from a CPU
    generator restored to `state` (as `take_draws` left it)."""
    from diffusers.pipelines.flux.pipeline_flux_controlnet import retrieve_latents

    if state is None:
        raise InputError("this ControlNet's control image is sampled from the seed before the noise: use it "
                         "through diffusion.sample", field="conditions")
    generator = torch.Generator("cpu")
    generator.set_state(state)
    param = next(vae.parameters())
    with torch.no_grad():
        latents = retrieve_latents(vae.encode(image.to(device=param.device, dtype=param.dtype)),
                                   generator=generator)
    return (latents - shift) * vae.config.scaling_factor
