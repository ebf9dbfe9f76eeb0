"""Write tiny SD3 / Flux.1 models as the files people download (test helpers, no diffusers writer exists).

- `sd3_all_in_one`: ComfyUI/Stability's SD3.5 single-file layout: the MMDiT under
  `model.diffusion_model.` in its original names (the reverse of diffusers'
  `convert_sd3_transformer_checkpoint_to_diffusers`: q/k/v fused into `qkv`, the last block's context
  modulation and the final layer's scale/shift swapped), the VAE under `first_stage_model.` in LDM names,
  the encoders under `text_encoders.clip_l/clip_g/t5xxl.transformer.` in transformers' names;
- `encoder_file`, `vae_file`: ComfyUI's separate files (`clip_l.safetensors`, `t5xxl_fp16.safetensors`,
  BFL's `ae.safetensors` in LDM names, no prefix).
The reading side is diffusers' own converters, so a round trip that gives the pipeline's pixels proves
the layout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from nodegraph_diffusion.single_file import vae_key_to_original
from safetensors.torch import save_file

from tests.diffusion.transformer_file_writers import to_bfl as flux_transformer_to_bfl

SD3_BLOCK = (  # diffusers name in transformer_blocks.N -> original name in joint_blocks.N (unfused parts)
    ("attn.norm_q.", "x_block.attn.ln_q."), ("attn.norm_k.", "x_block.attn.ln_k."),
    ("attn.norm_added_q.", "context_block.attn.ln_q."), ("attn.norm_added_k.", "context_block.attn.ln_k."),
    ("attn.to_out.0.", "x_block.attn.proj."), ("attn.to_add_out.", "context_block.attn.proj."),
    ("attn2.norm_q.", "x_block.attn2.ln_q."), ("attn2.norm_k.", "x_block.attn2.ln_k."),
    ("attn2.to_out.0.", "x_block.attn2.proj."), ("norm1.linear.", "x_block.adaLN_modulation.1."),
    ("norm1_context.linear.", "context_block.adaLN_modulation.1."), ("ff.net.0.proj.", "x_block.mlp.fc1."),
    ("ff.net.2.", "x_block.mlp.fc2."), ("ff_context.net.0.proj.", "context_block.mlp.fc1."),
    ("ff_context.net.2.", "context_block.mlp.fc2."),
)
SD3_TOP = {"pos_embed.pos_embed": "pos_embed", "pos_embed.proj.": "x_embedder.proj.",
           "time_text_embed.timestep_embedder.linear_1.": "t_embedder.mlp.0.",
           "time_text_embed.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
           "time_text_embed.text_embedder.linear_1.": "y_embedder.mlp.0.",
           "time_text_embed.text_embedder.linear_2.": "y_embedder.mlp.2.",
           "context_embedder.": "context_embedder.", "proj_out.": "final_layer.linear.",
           "norm_out.linear.": "final_layer.adaLN_modulation.1."}
FUSED = {"attn.to_": "x_block.attn.qkv", "attn.add_": "context_block.attn.qkv",
         "attn2.to_": "x_block.attn2.qkv"}


def _swap(value: torch.Tensor) -> torch.Tensor:
    """diffusers' `swap_scale_shift` is its own inverse."""
    first, second = value.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def sd3_transformer_to_original(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """An SD3Transformer2DModel state dict in the original MMDiT names (no prefix)."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if m := re.match(r"transformer_blocks\.(\d+)\.(.*)", key):
            block, rest = int(m[1]), m[2]
            qkv = re.match(r"(attn2?\.)(to_|add_)([qkv])(?:_proj)?\.(weight|bias)$", rest)
            if qkv and not rest.startswith(("attn.to_out", "attn.to_add_out", "attn2.to_out")):
                target = FUSED[qkv[1] + qkv[2]]
                fused.setdefault(f"joint_blocks.{block}.{target}.{qkv[4]}", {})[qkv[3]] = value
                continue
            name = next((new + rest[len(old):] for old, new in SD3_BLOCK if rest.startswith(old)), None)
            if name is None:
                raise ValueError(f"no original name for '{key}'")
            if block == num_layers - 1 and rest.startswith("norm1_context."):
                value = _swap(value)
            out[f"joint_blocks.{block}.{name}"] = value
            continue
        head = next((h for h in SD3_TOP if key.startswith(h)), None)
        if head is None:
            raise ValueError(f"no original name for '{key}'")
        out[SD3_TOP[head] + key[len(head):]] = _swap(value) if head == "norm_out.linear." else value
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def vae_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An AutoencoderKL state dict in LDM names (mid-block attention as 1x1 convolutions, as LDM)."""
    down = (re.match(r"encoder\.down_blocks\.(\d+)", k) for k in state)
    blocks = 1 + max(int(m[1]) for m in down if m)
    out = {}
    for key, value in state.items():
        name = vae_key_to_original(key, blocks)
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[name] = value
    return out


def encoder_state(model: Any) -> dict[str, torch.Tensor]:
    """A transformers text encoder's state in the names ComfyUI's files use (CLIP under `text_model.`)."""
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
             if not k.endswith("position_ids")}
    if type(model).__name__.startswith("CLIP"):
        state = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
                 for k, v in state.items()}
    if "encoder.embed_tokens.weight" in state and "shared.weight" in state:
        del state["encoder.embed_tokens.weight"]  # tied to shared.weight; ComfyUI's T5 files hold shared only
    return state


def sd3_all_in_one(components: dict[str, Any], path: Path, with_t5: bool = True,
                   with_encoders: bool = True) -> Path:
    """Write an SD3 pipeline's components as one ComfyUI-layout file."""
    transformer = components["transformer"]
    state = {k: v.detach().clone() for k, v in transformer.state_dict().items()}
    out = {"model.diffusion_model." + k: v
           for k, v in sd3_transformer_to_original(state, int(transformer.config.num_layers)).items()}
    vae = {k: v.detach().clone() for k, v in components["vae"].state_dict().items()}
    out.update({"first_stage_model." + k: v for k, v in vae_to_original(vae).items()})
    slots = (("text_encoder", "clip_l"), ("text_encoder_2", "clip_g"), ("text_encoder_3", "t5xxl"))
    for component, slot in slots if with_encoders else ():
        if component == "text_encoder_3" and not with_t5:
            continue
        out.update({f"text_encoders.{slot}.transformer.{k}": v
                    for k, v in encoder_state(components[component]).items()})
    save_file({k: v.contiguous() for k, v in out.items()}, str(path))
    return path


def encoder_file(model: Any, path: Path, dtype: torch.dtype | None = None) -> Path:
    """Write one text encoder as ComfyUI's separate file (`dtype`: e.g. torch.float8_e4m3fn)."""
    state = encoder_state(model)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(path))
    return path


def vae_file(vae: Any, path: Path) -> Path:
    """Write a VAE as BFL's `ae.safetensors`: LDM names, no prefix."""
    save_file({k: v.contiguous() for k, v in vae_to_original(dict(vae.state_dict())).items()}, str(path))
    return path


def flux_all_in_one(components: dict[str, Any], path: Path) -> Path:
    """Write a Flux pipeline's components as a ComfyUI all-in-one checkpoint (Comfy-Org's layout)."""
    state = {k: v.detach().clone() for k, v in components["transformer"].state_dict().items()}
    out = {"model.diffusion_model." + k: v for k, v in flux_transformer_to_bfl(state).items()}
    vae = {k: v.detach().clone() for k, v in components["vae"].state_dict().items()}
    out.update({"vae." + k: v for k, v in vae_to_original(vae).items()})
    for component, slot in (("text_encoder", "clip_l"), ("text_encoder_2", "t5xxl")):
        out.update({f"text_encoders.{slot}.transformer.{k}": v
                    for k, v in encoder_state(components[component]).items()})
    save_file({k: v.contiguous() for k, v in out.items()}, str(path))
    return path
