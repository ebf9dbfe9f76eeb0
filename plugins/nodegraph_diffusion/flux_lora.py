"""Flux.1 LoRA files in the layouts people download -> diffusers naming, by diffusers' own converter.

`FluxPipeline.lora_state_dict` reads diffusers/peft files (`transformer.…lora_A`) and converts Kohya
ones (`lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`, `.alpha`; ComfyUI's
`diffusion_model.` prefix too). Three gaps in it (diffusers 0.42.1, measured) are closed here, before
and after that call, and nothing else is converted by hand:
- BFL/ComfyUI files that name the matrices `lora_A`/`lora_B` under `diffusion_model.` (and CLIP-L's
  `text_encoders.clip_l.transformer.`) are silently taken for diffusers files and nothing loads
  ("No LoRA keys found"). Renamed to `lora_down`/`lora_up` they are Kohya files to the converter.
- The converter splits a single block's fused `linear1` (q, k, v and the MLP input) at FLUX.1-dev's
  widths, [3072, 3072, 3072, 12288], whatever the model: any other width fails an assert. The split
  is done here from the resident transformer's own layers (`split_linear1`), the converter's way.
- The final layer (`final_layer_adaLN_modulation_1`, `final_layer_linear`) is taken without its
  `.alpha` ("TODO: alphas" in diffusers): its scale alpha/rank is baked into the down matrix here.
- The converted top-level layers (x_embedder, context_embedder, time_text_embed.*, norm_out.linear,
  proj_out) come out without the `transformer.` prefix, so the transformer's loader drops them; the
  prefix is added here (`_prefixed`).
A diffusers-layout file goes to diffusers as the path itself, so its peft metadata (ranks, alphas) is
read as `load_lora_weights` reads it.
"""

from __future__ import annotations

import re
from typing import Any

FUSED_LINEAR1 = re.compile(r"^lora_unet_single_blocks_(\d+)_linear1\."
                           r"(lora_down\.weight|lora_up\.weight|alpha)$")
FINAL_LAYER = re.compile(r"^(lora_unet_final_layer_(?:adaLN_modulation_1|linear))\."
                         r"(lora_down\.weight|alpha)$")
BFL_PREFIXES = ("diffusion_model.", "text_encoders.clip_l.transformer.")
LINEAR1_PARTS = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")  # linear1's output, in order


def kohya_name(key: str) -> str:
    """A BFL/ComfyUI key in Kohya naming, as diffusers' converter rewrites it
    (`diffusion_model.single_blocks.0.linear1.lora_down.weight` ->
    `lora_unet_single_blocks_0_linear1.lora_down.weight`); other keys unchanged."""
    if key.startswith("diffusion_model."):
        key = "lora_unet_" + key.removeprefix("diffusion_model.")
    if not key.startswith("lora_unet_"):
        return key
    cut = min((key.find(f".{s}") for s in ("lora_down", "lora_up", "alpha") if f".{s}" in key), default=-1)
    return key.replace(".", "_") if cut < 0 else key[:cut].replace(".", "_") + key[cut:]


def bfl_to_kohya(state: dict[str, Any]) -> dict[str, Any]:
    """`lora_A`/`lora_B` -> `lora_down`/`lora_up` in BFL/ComfyUI keys (the only difference diffusers'
    Kohya converter cannot see past)."""
    out = {}
    for key, value in state.items():
        if key.startswith(BFL_PREFIXES):
            key = key.replace(".lora_A.weight", ".lora_down.weight")
            key = key.replace(".lora_B.weight", ".lora_up.weight")
        out[key] = value
    return out


def _balanced(scale: Any) -> tuple[Any, float]:
    """(scale_down, scale_up) with the same product, as diffusers' Kohya converter splits alpha/rank."""
    scale_down, scale_up = scale, 1.0
    while scale_down * 2 < scale_up:
        scale_down *= 2
        scale_up /= 2
    return scale_down, scale_up


def split_linear1(down: Any, up: Any, alpha: Any, dims: list[int], block: int) -> dict[str, Any]:
    """One single block's fused `linear1` LoRA as diffusers-named lora_A/lora_B of its four layers,
    by the rules of diffusers' `_convert_to_ai_toolkit_cat` but at the model's widths `dims`: the
    alpha/rank scale split between down and up; a block-diagonal up (rank divisible by 4, zeros off
    the diagonal, as a LoRA trained on the four layers apart gives) splits into four rank/4 LoRAs,
    any other shares the down matrix and splits the up rows."""
    import torch

    rank = down.shape[0]
    if alpha is None:
        alpha = torch.tensor(rank, dtype=down.dtype, device=down.device)
    scale_down, scale_up = _balanced(alpha / rank)
    down, up = down * scale_down, up * scale_up
    names = [f"transformer.single_transformer_blocks.{block}.{part}" for part in LINEAR1_PARTS]
    n = len(names)
    sparse = rank % n == 0
    if sparse:
        sub, row = rank // n, 0
        for j, dim in enumerate(dims):
            for k in range(n):
                if j != k:
                    sparse = sparse and bool(torch.all(up[row:row + dim, k * sub:(k + 1) * sub] == 0))
            row += dim
    out: dict[str, Any] = {}
    if not sparse:
        for name, part in zip(names, torch.split(up, dims, dim=0), strict=True):
            out[f"{name}.lora_A.weight"] = down
            out[f"{name}.lora_B.weight"] = part
        return out
    row = 0
    for j, (name, part) in enumerate(zip(names, torch.chunk(down, n, dim=0), strict=True)):
        out[f"{name}.lora_A.weight"] = part
        out[f"{name}.lora_B.weight"] = up[row:row + dims[j], j * sub:(j + 1) * sub].contiguous()
        row += dims[j]
    return out


def linear1_dims(transformer: Any, block: int) -> list[int]:
    """The output widths of single block `block`'s q, k, v and MLP-input layers (linear1's split)."""
    layers = transformer.single_transformer_blocks[block]
    return [int(layers.get_submodule(part).out_features) for part in LINEAR1_PARTS]


def _take_linear1(state: dict[str, Any], transformer: Any | None) -> dict[str, Any]:
    """Pop the fused linear1 LoRAs out of a Kohya-named `state`; their diffusers-named split (none
    when no transformer is given: the text encoders' read has no use for them)."""
    groups: dict[int, dict[str, Any]] = {}
    for key in [k for k in state if FUSED_LINEAR1.match(k)]:
        match = FUSED_LINEAR1.match(key)
        assert match is not None
        groups.setdefault(int(match[1]), {})[match[2]] = state.pop(key)
    out: dict[str, Any] = {}
    if transformer is None:
        return out
    for block, group in sorted(groups.items()):
        if "lora_down.weight" not in group or "lora_up.weight" not in group:
            raise ValueError(f"single block {block}'s linear1 LoRA lacks its lora_down or lora_up matrix")
        if block >= len(transformer.single_transformer_blocks):
            raise ValueError(f"it patches single block {block}; this transformer has "
                             f"{len(transformer.single_transformer_blocks)}")
        dims = linear1_dims(transformer, block)
        if sum(dims) != group["lora_up.weight"].shape[0]:
            raise ValueError(f"single block {block}'s linear1 LoRA is {group['lora_up.weight'].shape[0]} "
                             f"wide; this transformer's linear1 is {sum(dims)}")
        out.update(split_linear1(group["lora_down.weight"], group["lora_up.weight"], group.get("alpha"),
                                 dims, block))
    return out


def _bake_final_layer_alpha(state: dict[str, Any]) -> None:
    """Scale the final layer's down matrices by alpha/rank and drop the alpha (diffusers ignores it)."""
    for key in [k for k in state if FINAL_LAYER.match(k) and k.endswith(".alpha")]:
        name = key.removesuffix(".alpha")
        alpha = state.pop(key)
        down = state.get(f"{name}.lora_down.weight")
        if down is not None:
            state[f"{name}.lora_down.weight"] = down * (alpha / down.shape[0])


def needs_preparing(keys: list[str]) -> bool:
    """Whether a file's keys need this module's fixes before diffusers reads it."""
    return any(k.startswith(BFL_PREFIXES) or k.startswith("lora_unet_") for k in keys)


def flux_lora_state_dict(source: str | dict[str, Any],
                         transformer: Any | None) -> tuple[dict[str, Any], Any, Any]:
    """(state, network_alphas, metadata) of a Flux LoRA, as `FluxPipeline.load_lora_weights` reads it.

    `source` is a .safetensors path or a state dict; `transformer` is the resident model whose layer
    widths split fused `linear1` LoRAs (None: they are left out)."""
    from diffusers import FluxPipeline
    from safetensors import safe_open
    from safetensors.torch import load_file

    if isinstance(source, dict):
        keys = list(source)
    else:
        with safe_open(source, framework="pt") as file:
            keys = list(file.keys())  # noqa: SIM118 - a safe_open handle is no mapping
    if not needs_preparing(keys):
        return FluxPipeline.lora_state_dict(source, return_alphas=True, return_lora_metadata=True)
    raw = dict(source) if isinstance(source, dict) else load_file(source)
    state = {kohya_name(k): v for k, v in bfl_to_kohya(raw).items()}
    linear1 = _take_linear1(state, transformer)
    _bake_final_layer_alpha(state)
    if any(".lora_down.weight" in k for k in state):
        converted, alphas, metadata = FluxPipeline.lora_state_dict(state, return_alphas=True,
                                                                   return_lora_metadata=True)
    else:  # only linear1 LoRAs: nothing left for the converter
        converted, alphas, metadata = {}, None, None
    return {**_prefixed(converted), **linear1}, alphas, metadata


def _prefixed(state: dict[str, Any]) -> dict[str, Any]:
    """`transformer.` before the converter's top-level names (x_embedder, context_embedder,
    time_text_embed, norm_out, proj_out), which it leaves without one: `load_lora_adapter` keeps only
    `transformer.` keys, so FluxPipeline silently drops a Kohya file's img_in, txt_in, time_in,
    vector_in, guidance_in and final_layer weights (diffusers 0.42.1, measured)."""
    return {k if k.startswith(("transformer.", "text_encoder.")) else f"transformer.{k}": v
            for k, v in state.items()}


def owned(state: dict[str, Any]) -> dict[str, Any]:
    """The transformer's tensors of `state`, each in its own aligned memory, for peft to take as they are.

    Injected with `low_cpu_mem_usage` (load_lora_weights' default) the adapters *are* the given tensors:
    a file's would stay views into its memory map, a converter's views into fused matrices, and CPU
    kernels round 1 ulp differently on such offset data (3e-6 on a transformer output, measured). Own
    copies make every layout of one LoRA compute alike (the tests hold the pipeline to the same with
    `owned.own_storage`)."""
    return {k: v.clone() for k, v in state.items() if k.startswith("transformer.")}


def load_into_transformer(state: dict[str, Any], alphas: Any, transformer: Any, adapter_name: str,
                          metadata: Any) -> None:
    """Inject as `FluxPipeline.load_lora_weights` does (its `load_lora_into_transformer`)."""
    from diffusers import FluxPipeline
    from diffusers.loaders.lora_pipeline import _LOW_CPU_MEM_USAGE_DEFAULT_LORA

    FluxPipeline.load_lora_into_transformer(owned(state), network_alphas=alphas, transformer=transformer,
                                            adapter_name=adapter_name, metadata=metadata,
                                            low_cpu_mem_usage=_LOW_CPU_MEM_USAGE_DEFAULT_LORA)
