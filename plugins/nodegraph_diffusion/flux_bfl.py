"""Flux.1 transformer files in BFL/ComfyUI layout -> diffusers names, by diffusers' own converter.

`flux1-dev.safetensors` (and ComfyUI's copies, under `model.diffusion_model.`) name the transformer as
Black Forest Labs' reference code does: `double_blocks.N.img_attn.qkv`, `single_blocks.N.linear1`,
`img_in`, `final_layer.adaLN_modulation.1`, ... diffusers' `convert_flux_transformer_checkpoint_to_
diffusers` maps them, with one gap (diffusers 0.42.1, read and measured): it splits a single block's
fused `linear1` (q, k, v and the MLP input, stacked by rows) at FLUX.1's widths, [3072, 3072, 3072,
12288], whatever the model's, so a transformer of any other width (the tests' tiny one) fails inside
`torch.split`. Here each `linear1` is taken out before the converter runs, a placeholder of FLUX.1's
shape on the meta device (no memory) stands in for it, and the real one is split at the widths the
config gives (inner = heads x head dim; the MLP 4x inner, as `FluxSingleTransformerBlock` builds it);
the converter's own outputs for those four layers are replaced. Nothing else is converted by hand.

The split is by rows only, so it works unchanged on GGUF-quantized tensors (diffusers' `GGUFParameter`
keeps its quantization type through torch ops, and GGUF quantizes each row on its own) and on meta
tensors (`check_layout` converts a file's header shapes without reading any weights).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

COMFY_PREFIX = "model.diffusion_model."
BFL_MARKERS = ("double_blocks.", "single_blocks.")
_LINEAR1 = re.compile(r"^single_blocks\.(\d+)\.linear1\.(weight|bias)$")
LINEAR1_PARTS = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")  # linear1's rows, in order
FLUX1_LINEAR1_ROWS = 3 * 3072 + 12288  # what diffusers' converter splits, whatever the model
MLP_RATIO = 4.0  # FluxTransformer2DModel's single blocks (not a config field)


def without_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """The state with ComfyUI's `model.diffusion_model.` prefix dropped (diffusers drops it too)."""
    return {k.removeprefix(COMFY_PREFIX): v for k, v in state.items()}


def is_bfl(keys: Any) -> bool:
    """Whether transformer keys (prefix dropped) are in BFL layout."""
    return any(str(k).startswith(BFL_MARKERS) for k in keys)


def linear1_widths(config: Mapping[str, Any]) -> list[int]:
    """The rows of q, k, v and the MLP input stacked in a single block's linear1, from the config."""
    inner = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    return [inner, inner, inner, int(inner * MLP_RATIO)]


def bfl_to_diffusers(state: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a BFL-layout Flux transformer state (prefix already dropped) to diffusers names.

    Raises ValueError when a linear1 does not have the config's rows (a file of another width), and
    KeyError (diffusers' converter) when a tensor the layout needs is missing."""
    import torch
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    widths = linear1_widths(config)
    state = dict(state)  # the converter pops what it converts
    split: dict[str, Any] = {}
    for key in [k for k in state if _LINEAR1.match(k)]:
        match = _LINEAR1.match(key)
        assert match is not None
        block, kind = match[1], match[2]
        tensor = state.pop(key)
        rows = int(tensor.shape[0])
        if rows != sum(widths):
            raise ValueError(f"single block {block}'s linear1 has {rows} rows; this model's has "
                             f"{sum(widths)} (q, k, v of {widths[0]} and an MLP input of {widths[3]})")
        for part, piece in zip(LINEAR1_PARTS, torch.split(tensor, widths, dim=0), strict=True):
            split[f"single_transformer_blocks.{block}.{part}.{kind}"] = piece.clone()  # own memory
        placeholder = (FLUX1_LINEAR1_ROWS, *tensor.shape[1:])
        state[key] = torch.empty(placeholder, device="meta")
    converted = convert_flux_transformer_checkpoint_to_diffusers(state)
    if state:
        raise ValueError(f"{len(state)} tensors are not part of a Flux.1 transformer (e.g. "
                         f"'{sorted(state)[0]}')")
    converted.update(split)
    return converted
