"""A tiny IP-Adapter and CLIP image encoder for the built-in tiny UNet ("tinyworld").

Written in the original IP-Adapter layout that `pipe.load_ip_adapter` reads (h94/IP-Adapter's
`models/` folder): one `ip-adapter_tinyworld.safetensors` with `image_proj.proj.weight/bias`,
`image_proj.norm.weight/bias` (diffusers' `ImageProjection`, 4 image tokens) and
`ip_adapter.{1,3,5,...}.to_k_ip.weight` / `to_v_ip.weight` (one pair per cross-attention layer, in
the UNet's `attn_processors` order, numbered like the original: every layer counts, self-attention
takes the even ids), plus `image_encoder/` (`CLIPVisionModelWithProjection`, 32x32 input, 16 patches).

`save_ip_adapter(folder, unet, ...)` writes the same layout for any UNet (the SDXL tests use it on
the tiny SDXL, with an image encoder of other widths), also as an IP-Adapter *Plus*: `plus=True` gives
the Resampler projection in the original key layout (`image_proj.latents`, `proj_in`, `proj_out`,
`norm_out`, `layers.{i}.0.{norm1,norm2,to_q,to_kv,to_out}`, `layers.{i}.1.{0,1,3}`), which reads
the encoder's penultimate hidden states; diffusers' converter reads its sizes from the shapes.

All weights are drawn from a seeded generator (none is zero, so the adapter acts), so the files depend
only on the seed. Regenerate the committed folder with
`python -m nodegraph_control.tiny_ip_adapter build` (builtin/tinyworld-ip-adapter, ~60 kB, and
builtin/tinyxl-ip-adapter for the tiny SDXL).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from nodegraph_control.tiny_control import BUILTIN_DIR, tiny_unet

NAME = "tinyworld-ip-adapter"
WEIGHT_NAME = "ip-adapter_tinyworld.safetensors"
SEED = 404
XL_NAME = "tinyxl-ip-adapter"  # the same for the tiny SDXL (builtin:tinyxl), as h94's sdxl_models/
XL_WEIGHT_NAME = "ip-adapter_tinyxl.safetensors"
XL_SEED = 505
IMAGE_TOKENS = 4  # what diffusers' ImageProjection uses for the original IP-Adapter
VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "image_size": 32,
    "patch_size": 8,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
# the tiny SDXL's image encoder: other widths than the SD1.x one (as SDXL's ViT-bigG differs from ViT-H)
XL_VISION_CONFIG: dict[str, Any] = {**VISION_CONFIG, "hidden_size": 48, "projection_dim": 40,
                                    "hidden_act": "gelu"}
# what diffusers' converter assumes of a Plus projection: 4 blocks (its default depth), 64-wide heads
PLUS_DEPTH = 4
PLUS_HEAD_DIM = 64


def _randn(shape: tuple[int, ...], generator: torch.Generator, std: float) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32) * std


def build_tiny_image_encoder(seed: int = SEED, config: dict[str, Any] | None = None) -> Any:
    """A tiny `CLIPVisionModelWithProjection` (`VISION_CONFIG` unless told) with every weight from `seed`."""
    from nodegraph_diffusion.tiny import _init_
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**(config or VISION_CONFIG)))
    _init_(model, torch.Generator("cpu").manual_seed(seed), scale=1.0)
    return model.eval()


def _norm(prefix: str, width: int, generator: torch.Generator) -> dict[str, Any]:
    return {f"{prefix}.weight": 1.0 + _randn((width,), generator, 0.05),
            f"{prefix}.bias": _randn((width,), generator, 0.05)}


def plus_projection_state(
    cross: int, image_hidden: int, generator: torch.Generator, scale: float = 1.0, width: int = 32
) -> dict[str, Any]:
    """An IP-Adapter Plus Resampler (`image_proj.*`, original layout): `IMAGE_TOKENS` queries of
    `width`, one 64-wide head, reading (tokens, `image_hidden`) hidden states, giving `cross`-wide tokens."""
    inner, ffn = PLUS_HEAD_DIM, 4 * width

    def linear(rows: int, cols: int) -> Any:
        return _randn((rows, cols), generator, scale / cols**0.5)

    state: dict[str, Any] = {
        "image_proj.latents": _randn((1, IMAGE_TOKENS, width), generator, width**-0.5),
        "image_proj.proj_in.weight": linear(width, image_hidden),
        "image_proj.proj_in.bias": _randn((width,), generator, 0.05),
        "image_proj.proj_out.weight": linear(cross, width),
        "image_proj.proj_out.bias": _randn((cross,), generator, 0.05),
        **_norm("image_proj.norm_out", cross, generator),
    }
    for i in range(PLUS_DEPTH):
        block = f"image_proj.layers.{i}"
        state.update({
            **_norm(f"{block}.0.norm1", width, generator),
            **_norm(f"{block}.0.norm2", width, generator),
            f"{block}.0.to_q.weight": linear(inner, width),
            f"{block}.0.to_kv.weight": linear(2 * inner, width),
            f"{block}.0.to_out.weight": linear(width, inner),
            **_norm(f"{block}.1.0", width, generator),
            f"{block}.1.1.weight": linear(ffn, width),
            f"{block}.1.3.weight": linear(width, ffn),
        })
    return state


def adapter_state_dict(
    unet: Any, image_embed_dim: int, seed: int = SEED, scale: float = 1.0, plus: bool = False
) -> dict[str, Any]:
    """Original-layout IP-Adapter weights for `unet` (flat `image_proj.*` / `ip_adapter.*` keys).

    `image_embed_dim` is the encoder's projection width, or for `plus` its hidden width."""
    generator = torch.Generator("cpu").manual_seed(seed + 1)
    cross = int(unet.config.cross_attention_dim)
    if plus:
        state = plus_projection_state(cross, image_embed_dim, generator, scale)
    else:
        state = {
            "image_proj.proj.weight": _randn(
                (IMAGE_TOKENS * cross, image_embed_dim), generator, scale / image_embed_dim**0.5
            ),
            "image_proj.proj.bias": _randn((IMAGE_TOKENS * cross,), generator, 0.05),
            **_norm("image_proj.norm", cross, generator),
        }
    key_id = 1  # numbered as diffusers' `_convert_ip_adapter_attn_to_diffusers` reads them
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            continue
        hidden = int(unet.get_submodule(name.removesuffix(".processor")).to_k.out_features)
        for proj in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key_id}.{proj}.weight"] = _randn(
                (hidden, cross), generator, scale / cross**0.5
            )
        key_id += 2
    return state


def save_ip_adapter(
    target: Path,
    unet: Any,
    weight_name: str,
    seed: int = SEED,
    plus: bool = False,
    vision: dict[str, Any] | None = None,
    scale: float = 1.0,
) -> Path:
    """Write `target/weight_name` (an IP-Adapter for `unet`, weights times `scale`) and
    `target/image_encoder/`; return `target`."""
    from safetensors.torch import save_file

    if target.exists():
        shutil.rmtree(target)
    encoder = build_tiny_image_encoder(seed, vision)
    encoder.save_pretrained(target / "image_encoder", safe_serialization=True)
    width = int(encoder.config.hidden_size if plus else encoder.config.projection_dim)
    state = adapter_state_dict(unet, width, seed, scale, plus)
    save_file({k: v.contiguous() for k, v in state.items()}, target / weight_name)
    return target


def save_builtin(root: Path = BUILTIN_DIR, seed: int = SEED) -> Path:
    """Write `root/tinyworld-ip-adapter`: the adapter file and its `image_encoder/` folder."""
    return save_ip_adapter(root / NAME, tiny_unet(), WEIGHT_NAME, seed)


def save_builtin_xl(root: Path = BUILTIN_DIR, seed: int = XL_SEED) -> Path:
    """Write `root/tinyxl-ip-adapter`: an IP-Adapter for the tiny SDXL's UNet and its image encoder."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(BUILTIN_DIR / "tinyxl", subfolder="unet",
                                                local_files_only=True)
    return save_ip_adapter(root / XL_NAME, unet, XL_WEIGHT_NAME, seed, vision=XL_VISION_CONFIG)


def main(argv: list[str]) -> int:
    """`python -m nodegraph_control.tiny_ip_adapter build [ROOT]`."""
    if not argv or argv[0] != "build":
        print("usage: python -m nodegraph_control.tiny_ip_adapter build [ROOT]", file=sys.stderr)
        return 2
    root = Path(argv[1]) if len(argv) > 1 else BUILTIN_DIR
    print(save_builtin(root))
    print(save_builtin_xl(root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
