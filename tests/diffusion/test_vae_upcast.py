"""fp16 VAE overflow: a NaN/inf half-precision decode or encode is retried in float32, said in the report.

The overflow is made, not waited for: the tiny SDXL VAE's decoder (and encoder) input convolutions get
a bias just under float16's largest number (65504) and larger weights, so some of their outputs pass it
(inf; the group norms after them make NaN), while float32 runs the same weights without trouble. The
weights themselves stay representable in float16. CPU fp16 convolutions work in torch 2.13.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from nodegraph_diffusion.loading import use_vae
from nodegraph_diffusion.model_nodes import load_vae
from nodegraph_diffusion.paths import BUILTIN_DIR, VaeRef
from nodegraph_diffusion.sampling import decode, encode, make_generator
from nodegraph_diffusion.types import Latents
from nodegraph_diffusion.vae_nodes import vae_decode, vae_encode

from nodegraph_core.types import Image

WEIGHT_SCALE, BIAS = 1000.0, 6.5e4  # conv_in outputs up to ~65800: inf in float16, fine in float32


@pytest.fixture(scope="module")
def overflowing_vae(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A diffusers VAE folder that overflows in float16, and its weights as a float32 module (the
    fp16-rounded numbers, which is what the half-precision run loads)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(BUILTIN_DIR / "tinyxl" / "vae", local_files_only=True).eval()
    with torch.no_grad():
        for conv in (vae.decoder.conv_in, vae.encoder.conv_in):
            conv.weight.mul_(WEIGHT_SCALE)
            conv.bias.fill_(BIAS)
        for p in vae.parameters():
            p.copy_(p.half().float())
    folder = tmp_path_factory.mktemp("overflow") / "vae"
    vae.save_pretrained(folder, safe_serialization=True)
    return folder, vae


def test_fp16_decode_overflow_is_retried_in_fp32(make_ctx: Any, overflowing_vae: tuple[Path, Any]) -> None:
    folder, reference = overflowing_vae
    z = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    half = make_ctx(dtype="float16")
    handle = load_vae(half, VaeRef(str(folder)))
    assert not torch.isfinite(decode(reference.half(), z)).all()  # the plain fp16 decode: NaN
    reference.float()
    got = vae_decode(half, handle, Latents(z)).pixels
    assert float((got - decode(reference, z)).abs().max()) == 0.0  # the fp32 decode, bit for bit
    assert any("float16 VAE decode overflowed" in n and "float32" in n for n in half.run.notes)
    with use_vae(half, handle) as resident:  # the resident VAE went back to float16
        assert next(resident.parameters()).dtype == torch.float16
    again = vae_decode(half, handle, Latents(z)).pixels
    assert torch.equal(again, got)
    assert sum("overflowed" in n for n in half.run.notes) == 2


def test_fp16_encode_overflow_is_retried_with_the_same_draw(make_ctx: Any,
                                                            overflowing_vae: tuple[Path, Any]) -> None:
    folder, reference = overflowing_vae
    pixels = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(1))
    half = make_ctx(dtype="float16")
    # one intra-op thread: with two, the CPU convolutions of the widened VAE and of the reference sum
    # in different orders, which the 1000x weights of this overflowing VAE blow up to 3.8e-4 (measured)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = vae_encode(half, load_vae(half, VaeRef(str(folder))), Image(pixels), seed=4)
        expected = encode(reference.float(), pixels, make_generator(4))
    finally:
        torch.set_num_threads(threads)
    assert float((got.samples - expected).abs().max()) == 0.0
    assert any("VAE encode overflowed" in n for n in half.run.notes)


def test_a_finite_fp16_decode_is_not_retried(make_ctx: Any) -> None:
    half = make_ctx(dtype="float16")
    handle = load_vae(half, VaeRef(str(BUILTIN_DIR / "tinyxl" / "vae")))
    z = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    pixels = vae_decode(half, handle, Latents(z)).pixels
    assert torch.isfinite(pixels).all() and half.run.notes == []
