"""A tiny IP-Adapter and CLIP image encoder for the built-in tiny UNet ("tinyworld").

Written in the original IP-Adapter layout that `pipe.load_ip_adapter` reads (h94/IP-Adapter's
`models/` folder): one `ip-adapter_tinyworld.safetensors` with `image_proj.proj.weight/bias`,
`image_proj.norm.weight/bias` (diffusers' `ImageProjection`, 4 image tokens) and
`ip_adapter.{1,3,5,...}.to_k_ip.weight` / `to_v_ip.weight` (one pair per cross-attention layer, in
the UNet's `attn_processors` order, numbered like the original: every layer counts, self-attention
takes the even ids), plus `image_encoder/` (`CLIPVisionModelWithProjection`, 32x32 input, 16 patches).

All weights are drawn from a seeded generator (none is zero, so the adapter acts), so the files depend
only on the seed. Regenerate the committed folder with
`python -m nodegraph_control.tiny_ip_adapter build` (builtin/tinyworld-ip-adapter, ~60 kB).
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


def _randn(shape: tuple[int, ...], generator: torch.Generator, std: float) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32) * std


def build_tiny_image_encoder(seed: int = SEED) -> Any:
    """A tiny `CLIPVisionModelWithProjection` with every weight drawn from `seed`."""
    from nodegraph_diffusion.tiny import _init_
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION_CONFIG))
    _init_(model, torch.Generator("cpu").manual_seed(seed), scale=1.0)
    return model.eval()


def adapter_state_dict(
    unet: Any, image_embed_dim: int, seed: int = SEED, scale: float = 1.0
) -> dict[str, Any]:
    """Original-layout IP-Adapter weights for `unet` (flat `image_proj.*` / `ip_adapter.*` keys)."""
    generator = torch.Generator("cpu").manual_seed(seed + 1)
    cross = int(unet.config.cross_attention_dim)
    state: dict[str, Any] = {
        "image_proj.proj.weight": _randn(
            (IMAGE_TOKENS * cross, image_embed_dim), generator, scale / image_embed_dim**0.5
        ),
        "image_proj.proj.bias": _randn((IMAGE_TOKENS * cross,), generator, 0.05),
        "image_proj.norm.weight": 1.0 + _randn((cross,), generator, 0.05),
        "image_proj.norm.bias": _randn((cross,), generator, 0.05),
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


def save_builtin(root: Path = BUILTIN_DIR, seed: int = SEED) -> Path:
    """Write `root/tinyworld-ip-adapter`: the adapter file and its `image_encoder/` folder."""
    from safetensors.torch import save_file

    target = root / NAME
    if target.exists():
        shutil.rmtree(target)
    encoder = build_tiny_image_encoder(seed)
    encoder.save_pretrained(target / "image_encoder", safe_serialization=True)
    state = adapter_state_dict(tiny_unet(), int(encoder.config.projection_dim), seed)
    save_file({k: v.contiguous() for k, v in state.items()}, target / WEIGHT_NAME)
    return target


def main(argv: list[str]) -> int:
    """`python -m nodegraph_control.tiny_ip_adapter build [ROOT]`."""
    if not argv or argv[0] != "build":
        print("usage: python -m nodegraph_control.tiny_ip_adapter build [ROOT]", file=sys.stderr)
        return 2
    print(save_builtin(Path(argv[1]) if len(argv) > 1 else BUILTIN_DIR))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
