"""VAE nodes: latents to pixels and back, with the diffusers pipelines' exact arithmetic."""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

from nodegraph_core.types import Image, Mask
from pydantic import Field

from nodegraph.api import InputError, NodeContext, node
from nodegraph_diffusion import family_facts
from nodegraph_diffusion.latent_nodes import VAE_SCALE
from nodegraph_diffusion.loading import use_vae
from nodegraph_diffusion.types import Latents, SeedDraws, VaeHandle
from nodegraph_diffusion.vae_files import encoding_family, in_context

# A catalogue module: torch and the sampling arithmetic are imported inside the node bodies.


@node("diffusion.vae_decode", version="1.0.0", facts=family_facts.decode_facts)
def vae_decode(
    ctx: NodeContext,
    vae: Annotated[VaeHandle, Field(description="The VAE")],
    latents: Annotated[Latents, Field(description="Latents to decode")],
    tiled: Annotated[bool, Field(description="Decode tile by tile (diffusers' tiled_decode) to save memory")]
    = False,
    tile_size: Annotated[int, Field(ge=64, le=4096, multiple_of=8,
                                    description="Tile edge in pixels when tiled")] = 512,
) -> Image:
    """Decode latents into RGB images (float32, [0, 1]), exactly as the diffusers pipelines do."""
    from nodegraph_diffusion.oom_fallback import decode_with_fallback

    with use_vae(ctx, in_context(vae, latents.family)) as model:  # a VAE file: the latents' family
        return Image(decode_with_fallback(ctx, model, latents.samples, tiled, tile_size))


def _check_size(image: Image) -> None:
    w, h = image.size
    if w % VAE_SCALE or h % VAE_SCALE:
        raise InputError(f"image is {w}x{h}; width and height must be multiples of {VAE_SCALE} "
                         "(resize or crop it first)", field="image")


# 1.1: records its draws (SeedDraws)
@node("diffusion.vae_encode", version="1.1.0", facts=family_facts.vae_encode_facts)
def vae_encode(
    ctx: NodeContext,
    vae: Annotated[VaeHandle, Field(description="The VAE")],
    image: Annotated[Image, Field(description="Images to encode (sides multiples of 8)")],
    seed: Annotated[int, Field(ge=0, le=2**63 - 1, description="Seed for sampling the latent distribution")]
    = 0,
    mode: Annotated[Literal["sample", "mean"], Field(
        description="sample the latent distribution (like the img2img pipeline) or take its mean")] = "sample",
) -> Latents:
    """Encode RGB images into scaled latents (the start of img2img and inpainting).

    The latents record the draw taken from `seed`, so a sampler with the same seed draws its noise
    after it, as StableDiffusionImg2ImgPipeline does with its one generator: graph and pipeline then
    agree from the same input pixels, not only from the same latents."""
    from nodegraph_diffusion.sampling import make_generator
    from nodegraph_diffusion.vae_upcast import encode_finite

    _check_size(image)
    with use_vae(ctx, vae) as model:
        samples = encode_finite(ctx, model, image.pixels, make_generator(seed), mode)
    drawn = SeedDraws(int(seed), (tuple(samples.shape),)) if mode == "sample" else None
    return Latents(samples, drawn=drawn, family=encoding_family(vae))


class InpaintLatents(NamedTuple):
    latents: Latents  # the encoded image, with the mask attached
    masked: Latents  # the encoded masked image, for 9-channel inpainting UNets


# 1.1: the pipeline's draw order
@node("diffusion.vae_encode_inpaint", version="1.1.0", facts=family_facts.vae_encode_facts)
def vae_encode_inpaint(
    ctx: NodeContext,
    vae: Annotated[VaeHandle, Field(description="The VAE")],
    image: Annotated[Image, Field(description="Images to inpaint (sides multiples of 8)")],
    mask: Annotated[Mask, Field(description="Pixel mask, 1 (white) = repaint")],
    seed: Annotated[int, Field(ge=0, le=2**63 - 1, description="Seed for sampling the latent distribution")]
    = 0,
) -> InpaintLatents:
    """Encode an image with its inpainting mask; also the masked image for 9-channel inpaint UNets.

    Draws as StableDiffusionInpaintPipeline does with a 4-channel UNet and one generator: the image's
    latent sample, then the noise (left for the sampler, which replays the recorded shapes around it
    when its seed is this one), then the masked image's sample."""
    from nodegraph_diffusion.sampling import draw_noise, latent_mask, make_generator
    from nodegraph_diffusion.vae_upcast import encode_finite

    _check_size(image)
    if tuple(mask.pixels.shape[-2:]) != tuple(image.pixels.shape[-2:]):
        raise InputError(f"mask is {tuple(mask.pixels.shape[-2:])} but the image is "
                         f"{tuple(image.pixels.shape[-2:])} (h, w)", field="mask")
    generator = make_generator(seed)
    binary = latent_mask(mask.pixels, *mask.pixels.shape[-2:])  # thresholded at pixel size
    with use_vae(ctx, vae) as model:
        latents = encode_finite(ctx, model, image.pixels, generator)
        draw_noise(tuple(latents.shape), generator)  # the pipeline's noise: diffusion.sample draws it
        # the pipeline zeroes masked pixels in [-1, 1] space, i.e. mid-grey 0.5 in [0, 1]
        keep = (binary < 0.5).to(image.pixels.dtype)
        masked = encode_finite(ctx, model, image.pixels * keep + 0.5 * (1 - keep), generator)
    h, w = latents.shape[-2:]
    drawn = SeedDraws(int(seed), (tuple(latents.shape),), (tuple(masked.shape),))
    family = encoding_family(vae)
    return InpaintLatents(Latents(latents, latent_mask(mask.pixels, h, w), drawn=drawn, family=family),
                          Latents(masked, family=family))
