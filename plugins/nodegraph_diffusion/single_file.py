"""Original-layout (A1111/ComfyUI/LDM) single-file checkpoints: write them, and tell their family.

Reading is diffusers' job (`from_single_file` with a shipped local config folder, see loading.py).
Writing is the reverse of diffusers' own LDM -> diffusers key mapping (`single_file_utils`), generalised
to any number of blocks and layers per block so the tiny model converts too; a test round-trips it
through `from_single_file` to prove the mapping exact.
"""

from __future__ import annotations

import re
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_VAE_ATTN = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)


def _resnet(rest: str) -> str:
    for diffusers_name, ldm_name in _UNET_RESNET:
        if rest.startswith(diffusers_name + "."):
            return ldm_name + rest[len(diffusers_name):]
    return rest


def unet_key_to_original(key: str, config: dict[str, Any]) -> str:
    """Map one diffusers UNet key to its LDM name (without the `model.diffusion_model.` prefix)."""
    per = int(config["layers_per_block"]) + 1
    up_types = list(config["up_block_types"])
    for head, ldm in _UNET_TOP.items():
        if key.startswith(head):
            return ldm + key[len(head):]
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        b, layer, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{b * per + layer + 1}.0.{_resnet(rest)}"
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        b, layer, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{b * per + layer + 1}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        b, layer, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{b * per + layer}.0.{_resnet(rest)}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        b, layer, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{b * per + layer}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        b = int(m[1])
        slot = 2 if "CrossAttn" in up_types[b] else 1
        return f"output_blocks.{b * per + per - 1}.{slot}.conv.{m[2]}"
    raise ValueError(f"no original-layout name for UNet key '{key}'")


def vae_key_to_original(key: str, num_blocks: int) -> str:
    """Map one diffusers VAE key to its LDM name (without the `first_stage_model.` prefix)."""
    key = key.replace("conv_norm_out.", "norm_out.")
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        block = num_blocks - 1 - int(m[1])
        return f"decoder.up.{block}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.{m[2]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        rest = m[2]
        for diffusers_name, ldm_name in _VAE_ATTN:
            if rest.startswith(diffusers_name):
                rest = ldm_name + rest[len(diffusers_name):]
        return f"{m[1]}.mid.attn_1.{rest}"
    return key  # conv_in, conv_out, norm_out, quant_conv, post_quant_conv keep their names


def diffusers_to_original(parts: dict[str, dict[str, Any]], unet_config: dict[str, Any]) -> dict[str, Any]:
    """Build an SD1.x original-layout state dict from diffusers state dicts of unet, vae, text_encoder.

    The VAE's mid-block attention projections become 1x1 convolutions (as in LDM); CLIP keys get the
    `text_model.` prefix that transformers >= 5.6 dropped from `CLIPTextModel`.
    """
    out: dict[str, Any] = {}
    for key, value in parts["unet"].items():
        out[UNET_PREFIX + unet_key_to_original(key, unet_config)] = value
    down = (re.match(r"encoder\.down_blocks\.(\d+)", k) for k in parts["vae"])
    vae_blocks = 1 + max(int(m[1]) for m in down if m)
    for key, value in parts["vae"].items():
        name = vae_key_to_original(key, vae_blocks)
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[VAE_PREFIX + name] = value
    for key, value in parts["text_encoder"].items():
        name = key if key.startswith("text_model.") else "text_model." + key
        out[CLIP_PREFIX + name] = value
    return out


def detect_family(keys: set[str], shapes: dict[str, tuple[int, ...]]) -> str:
    """Tell a checkpoint's model family from its keys: 'sd15', 'tinyworld', 'sdxl', 'sd2' or 'unknown'.

    SD1.x and the tiny model share the layout; the cross-attention width (768 vs 32) tells them apart.
    """
    if any(k.startswith("conditioner.embedders.1.model.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    attn = (k for k in sorted(keys) if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight"))
    probe = next(attn, None)
    has_clip = any(k.startswith(CLIP_PREFIX) for k in keys)
    if probe is None or not has_clip:
        return "unknown"
    width = shapes[probe][-1]
    if width == 768:
        return "sd15"
    if width == 32:
        return "tinyworld"
    return "unknown"


SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_BIGG_PREFIXES = ("conditioner.embedders.1.model.", "conditioner.embedders.0.model.")  # base, refiner
_UNET_ADD_EMBEDDING = {"add_embedding.linear_1.": "label_emb.0.0.",
                       "add_embedding.linear_2.": "label_emb.0.2."}
_BIGG_LAYER = (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
               ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj"))


def open_clip_state(encoder: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A `CLIPTextModelWithProjection` state dict in OpenCLIP's layout (SDXL's bigG encoder):
    q/k/v fused into `attn.in_proj_*`, `text_projection` a bare transposed matrix."""
    import torch

    out: dict[str, Any] = {}
    fused: dict[str, dict[str, Any]] = {}
    top = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.final_layer_norm.weight": "ln_final.weight",
           "text_model.final_layer_norm.bias": "ln_final.bias"}
    for key, value in encoder.items():
        if key in top:
            out[prefix + top[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.(.*)", key):
            layer, rest = m[1], m[2]
            if qkv := re.match(r"self_attn\.([qkv])_proj\.(weight|bias)", rest):
                fused.setdefault(f"{layer}.{qkv[2]}", {})[qkv[1]] = value
                continue
            for diffusers_name, clip_name in _BIGG_LAYER:
                rest = rest.replace(diffusers_name, clip_name)
            out[f"{prefix}transformer.resblocks.{layer}.{rest}"] = value
        elif key != "text_model.embeddings.position_ids":
            raise ValueError(f"no OpenCLIP name for text-encoder key '{key}'")
    for name, parts in fused.items():
        layer, kind = name.split(".")
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def sdxl_diffusers_to_original(parts: dict[str, dict[str, Any]],
                               unet_config: dict[str, Any]) -> dict[str, Any]:
    """Build an SDXL original-layout (A1111/ComfyUI) state dict from diffusers state dicts of unet, vae,
    text_encoder_2 and, for the base, text_encoder (`parts["text_encoder"]` absent or None: the refiner,
    whose bigG encoder then sits at `conditioner.embedders.0.model.`)."""
    unet = {}
    for key, value in parts["unet"].items():
        head = next((h for h in _UNET_ADD_EMBEDDING if key.startswith(h)), None)
        if head is not None:
            unet[UNET_PREFIX + _UNET_ADD_EMBEDDING[head] + key[len(head):]] = value
        else:
            unet[key] = value
    plain = {k: v for k, v in unet.items() if not k.startswith(UNET_PREFIX)}
    out = diffusers_to_original({"unet": plain, "vae": parts["vae"], "text_encoder": {}}, unet_config)
    out.update({k: v for k, v in unet.items() if k.startswith(UNET_PREFIX)})
    first = parts.get("text_encoder")
    if first:
        for key, value in first.items():
            name = key if key.startswith("text_model.") else "text_model." + key
            out[SDXL_CLIP_PREFIX + name] = value
    out.update(open_clip_state(parts["text_encoder_2"], SDXL_BIGG_PREFIXES[0 if first else 1]))
    return out
