"""diffusion.vae_encode_for_inpaint against ComfyUI's VAEEncodeForInpaint, written here on its (B, H, W, C)
layout step for step, with the VAE called directly through diffusers."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from nodegraph_core.types import Image, Mask
from nodegraph_diffusion.inpaint_nodes import prepare, vae_encode_for_inpaint
from nodegraph_diffusion.model_nodes import load_model


def _comfy(pixels: torch.Tensor, mask: torch.Tensor, grow: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI's preprocessing, as its nodes.py writes it: pixels (B, H, W, C), mask (H, W)."""
    x, y = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
    mask = F.interpolate(mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])),
                         size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")
    pixels = pixels.clone()
    if pixels.shape[1] != x or pixels.shape[2] != y:
        xo, yo = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
        pixels = pixels[:, xo:x + xo, yo:y + yo, :]
        mask = mask[:, :, xo:x + xo, yo:y + yo]
    if grow == 0:
        erosion = mask
    else:
        kernel = torch.ones((1, 1, grow, grow))
        erosion = torch.clamp(F.conv2d(mask.round(), kernel, padding=math.ceil((grow - 1) / 2)), 0, 1)
    m = (1.0 - mask.round()).squeeze(1)
    for i in range(3):
        pixels[:, :, :, i] -= 0.5
        pixels[:, :, :, i] *= m
        pixels[:, :, :, i] += 0.5
    return pixels, erosion[:, :, :x, :y].round()


def test_equals_comfyui_preprocessing_and_the_vae_mean(ctx: Any) -> None:
    model = load_model(ctx, path="builtin:tinyworld")
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(1, 3, 45, 53, generator=gen)  # not multiples of 8: cut, centred
    mask = torch.zeros(1, 1, 30, 30)
    mask[..., 8:20, 10:24] = 1.0  # resized (bilinear) to the image first
    out = vae_encode_for_inpaint(ctx, model.vae, Image(pixels), Mask(mask), grow_mask_by=6)

    blanked, noise_mask = _comfy(pixels.permute(0, 2, 3, 1), mask[0, 0], 6)
    from diffusers import AutoencoderKL
    from nodegraph_diffusion.loading import own_storage
    from nodegraph_diffusion.paths import BUILTIN_DIR

    # weights in fresh memory like our loader's: CPU kernels pick paths by alignment (1 ulp otherwise)
    vae = own_storage(AutoencoderKL.from_pretrained(BUILTIN_DIR / "tinyworld" / "vae", local_files_only=True))
    with torch.no_grad():  # ComfyUI hands the VAE its (B, H, W, C) image with the channels moved
        mean = vae.encode(2.0 * blanked.movedim(-1, 1) - 1.0).latent_dist.mode()
    expected = vae.config.scaling_factor * mean
    assert out.samples.shape == (1, 4, 5, 6)
    # the pixels going into the VAE are ComfyUI's to the bit; the encode itself then differs only by
    # the order CPU convolutions sum in on the two memory layouts (1.5e-6 measured)
    ours, our_mask = prepare(pixels, mask, 6)
    assert torch.equal(ours, blanked.permute(0, 3, 1, 2)) and torch.equal(our_mask, noise_mask)
    assert (out.samples - expected).abs().max().item() < 1e-5
    assert torch.equal(out.noise_mask, F.interpolate(noise_mask, size=(5, 6), mode="bilinear"))
    plain = vae_encode_for_inpaint(ctx, model.vae, Image(pixels), Mask(mask), grow_mask_by=0)
    assert (plain.noise_mask.sum() < out.noise_mask.sum()).item()  # growing the mask grows the repaint
    assert torch.equal(plain.samples, out.samples)  # the pixels are blanked by the ungrown mask
