"""fp16 VAE overflow: a half-precision decode (or encode) that gives NaN/inf is run again in float32.

SDXL's original VAE overflows in float16: some activations pass 65504, become inf, then NaN through
the group norms, and the image comes out black. diffusers avoids it by upcasting such VAEs before every
decode (`force_upcast`, `upcast_vae`), paying float32 for every image. Here the half-precision pass runs
first and only a non-finite result is retried, with the VAE moved to float32 for that one call (its
weights are the same numbers, widened; it goes back to its dtype afterwards, also on errors) — the
very pixels a float32 decode of that VAE gives — and the run report says so. A VAE that does not
overflow (the fp16-fixed SDXL VAE, SD1.x's) never pays for the retry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from nodegraph.api import NodeContext
from nodegraph_diffusion.vae_math import decode_raw, encode, postprocess

HALF = (torch.float16, torch.bfloat16)


def _upcast_retry(ctx: NodeContext, vae: Any, call: Callable[[], torch.Tensor], what: str) -> torch.Tensor:
    """`call()`, and once more with `vae` in float32 if it ran in half precision and gave NaN/inf."""
    dtype = next(vae.parameters()).dtype
    out = call()
    if dtype not in HALF or bool(torch.isfinite(out).all()):
        return out
    vae.to(torch.float32)
    try:
        out = call()
    finally:
        vae.to(dtype)
    name = str(dtype).replace("torch.", "")
    ctx.note(f"the {name} VAE {what} overflowed (NaN/inf); ran it again in float32")
    return out


def decode_finite(ctx: NodeContext, vae: Any, latents: torch.Tensor, tiled: bool = False,
                  tile_size: int | None = None) -> torch.Tensor:
    """`vae_math.decode`, retried in float32 when the half-precision output is not finite."""
    raw = _upcast_retry(ctx, vae, lambda: decode_raw(vae, latents, tiled, tile_size), "decode")
    return postprocess(raw)


def encode_finite(ctx: NodeContext, vae: Any, pixels: torch.Tensor, generator: torch.Generator | None = None,
                  mode: str = "sample", scaled: bool = True) -> torch.Tensor:
    """`vae_math.encode`, retried in float32 (with the generator rewound: the same draw) on NaN/inf."""
    state = generator.get_state() if generator is not None else None

    def call() -> torch.Tensor:
        if generator is not None and state is not None:
            generator.set_state(state)
        return encode(vae, pixels, generator, mode, scaled)

    return _upcast_retry(ctx, vae, call, "encode")
