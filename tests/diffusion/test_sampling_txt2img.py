"""Our loop == StableDiffusionPipeline, bit for bit on CPU fp32, for every common scheduler."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionPipeline
from sampling_helpers import SCHEDULERS, components, embeds, max_diff, ours, scheduler

from nodegraph_diffusion.sampling import decode


@pytest.fixture(scope="module")
def comps():
    return components()


def pipeline(comps, sched: str) -> StableDiffusionPipeline:
    parts = {k: v for k, v in comps.items() if k != "scheduler"}
    return StableDiffusionPipeline(**parts, scheduler=scheduler(sched), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


@pytest.mark.parametrize("sched", sorted(SCHEDULERS))
def test_txt2img_latents_match_pipeline_exactly(comps, sched):
    pos, neg = embeds(1), embeds(2)
    pipe = pipeline(comps, sched)
    expected = pipe(prompt_embeds=pos, negative_prompt_embeds=neg, height=64, width=64,
                    num_inference_steps=6, guidance_scale=7.5, output_type="latent",
                    generator=torch.Generator().manual_seed(11)).images
    got = ours(comps, sched, 11, 6, 7.5, torch.zeros(1, 4, 8, 8), pos, neg)
    assert max_diff(got, expected) == 0.0


def test_txt2img_decoded_image_matches_pipeline_exactly(comps):
    pos, neg = embeds(1), embeds(2)
    pipe = pipeline(comps, "dpmpp_2m")
    expected = pipe(prompt_embeds=pos, negative_prompt_embeds=neg, height=64, width=64,
                    num_inference_steps=5, guidance_scale=5.0, output_type="pt",
                    generator=torch.Generator().manual_seed(3)).images
    latents = ours(comps, "dpmpp_2m", 3, 5, 5.0, torch.zeros(1, 4, 8, 8), pos, neg)
    assert max_diff(decode(comps["vae"], latents), expected) == 0.0


def test_batch_equals_num_images_per_prompt(comps):
    pos, neg = embeds(1), embeds(2)
    pipe = pipeline(comps, "euler_a")
    expected = pipe(prompt_embeds=pos, negative_prompt_embeds=neg, height=64, width=64,
                    num_inference_steps=4, guidance_scale=7.0, output_type="latent",
                    num_images_per_prompt=3, generator=torch.Generator().manual_seed(5)).images
    got = ours(comps, "euler_a", 5, 4, 7.0, torch.zeros(3, 4, 8, 8), pos, neg)
    assert max_diff(got, expected) == 0.0
    assert max_diff(got[0], got[1]) > 0.0  # each image gets its own noise


def test_no_cfg_matches_pipeline_guidance_one(comps):
    pos = embeds(1)
    pipe = pipeline(comps, "euler")
    expected = pipe(prompt_embeds=pos, height=64, width=64, num_inference_steps=4, guidance_scale=1.0,
                    output_type="latent", generator=torch.Generator().manual_seed(9)).images
    got = ours(comps, "euler", 9, 4, 1.0, torch.zeros(1, 4, 8, 8), pos, None)
    assert max_diff(got, expected) == 0.0


def test_seed_changes_result(comps):
    pos, neg = embeds(1), embeds(2)
    a = ours(comps, "euler", 1, 3, 7.5, torch.zeros(1, 4, 8, 8), pos, neg)
    b = ours(comps, "euler", 2, 3, 7.5, torch.zeros(1, 4, 8, 8), pos, neg)
    c = ours(comps, "euler", 1, 3, 7.5, torch.zeros(1, 4, 8, 8), pos, neg)
    assert max_diff(a, b) > 0.0
    assert max_diff(a, c) == 0.0
