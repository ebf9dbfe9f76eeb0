"""img2img and inpaint through our loop == the diffusers pipelines, bit for bit on CPU fp32.

RNG order: the pipelines sample the VAE's latent distribution with the generator *before* drawing
the noise. Our graph encodes the image in its own node (its own seed), so the clean way to compare
is to give the pipelines already-encoded 4-channel latents as `image` (they skip the VAE then) and
the same latents to our loop: both then draw only the noise, then the scheduler's own draws.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, UNet2DConditionModel
from sampling_helpers import SCHEDULERS, components, embeds, max_diff, ours, scheduler

from nodegraph_diffusion.sampling import encode, latent_mask, make_generator
from nodegraph_diffusion.tiny import UNET_CONFIG, _init_


@pytest.fixture(scope="module")
def comps():
    return components()


@pytest.fixture(scope="module")
def source_latents(comps):
    pixels = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    return encode(comps["vae"], pixels, make_generator(100))


@pytest.fixture(scope="module")
def pixel_mask():
    mask = torch.zeros(1, 1, 64, 64)
    mask[:, :, 16:48, 8:40] = 0.8  # >= 0.5: repaint
    mask[:, :, 0:8, 0:8] = 0.3  # < 0.5: keep
    return mask


def pipe_of(cls, comps, sched, unet=None):
    parts = {k: v for k, v in comps.items() if k != "scheduler"}
    if unet is not None:
        parts["unet"] = unet
    return cls(**parts, scheduler=scheduler(sched), safety_checker=None, feature_extractor=None,
               requires_safety_checker=False)


@pytest.mark.parametrize("sched", sorted(SCHEDULERS))
def test_img2img_matches_pipeline_exactly(comps, source_latents, sched):
    pos, neg = embeds(1), embeds(2)
    expected = pipe_of(StableDiffusionImg2ImgPipeline, comps, sched)(
        prompt_embeds=pos, negative_prompt_embeds=neg, image=source_latents, strength=0.6,
        num_inference_steps=8, guidance_scale=6.0, output_type="latent",
        generator=torch.Generator().manual_seed(21)).images
    got = ours(comps, sched, 21, 8, 6.0, source_latents, pos, neg, denoise=0.6)
    assert max_diff(got, expected) == 0.0


@pytest.mark.parametrize("sched", ["euler", "euler_a", "dpmpp_2m", "ddim", "heun"])
@pytest.mark.parametrize("strength", [1.0, 0.7])
def test_inpaint_4ch_matches_pipeline_exactly(comps, source_latents, pixel_mask, sched, strength):
    pos, neg = embeds(1), embeds(2)
    expected = pipe_of(StableDiffusionInpaintPipeline, comps, sched)(
        prompt_embeds=pos, negative_prompt_embeds=neg, image=source_latents, mask_image=pixel_mask,
        masked_image_latents=source_latents, strength=strength, height=64, width=64,
        num_inference_steps=6, guidance_scale=7.5, output_type="latent",
        generator=torch.Generator().manual_seed(4)).images
    mask = latent_mask(pixel_mask, 8, 8)
    got = ours(comps, sched, 4, 6, 7.5, source_latents, pos, neg, denoise=strength, mask=mask)
    assert max_diff(got, expected) == 0.0
    # kept region stays the source (the last blend uses the clean latents)
    keep = mask.expand_as(got) == 0
    assert max_diff(got[keep], source_latents[keep]) == 0.0


def test_inpaint_9ch_unet_matches_pipeline_exactly(comps, source_latents, pixel_mask):
    unet = UNet2DConditionModel(**{**UNET_CONFIG, "in_channels": 9})
    _init_(unet, torch.Generator().manual_seed(1))
    unet.eval()
    masked = source_latents * 0.5  # stands in for the encoded masked image
    pos, neg = embeds(1), embeds(2)
    expected = pipe_of(StableDiffusionInpaintPipeline, comps, "euler_a", unet=unet)(
        prompt_embeds=pos, negative_prompt_embeds=neg, image=source_latents, mask_image=pixel_mask,
        masked_image_latents=masked, strength=1.0, height=64, width=64,
        num_inference_steps=5, guidance_scale=7.5, output_type="latent",
        generator=torch.Generator().manual_seed(8)).images
    got = ours({**comps, "unet": unet}, "euler_a", 8, 5, 7.5, source_latents, pos, neg,
               mask=latent_mask(pixel_mask, 8, 8), masked_image_latents=masked)
    assert max_diff(got, expected) == 0.0
