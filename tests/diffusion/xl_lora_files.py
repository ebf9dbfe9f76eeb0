"""SDXL LoRA files for the tests: random non-zero peft adapters on builtin:tinyxl, saved in diffusers
layout, and the same weights rewritten in the Kohya/A1111 layout real SDXL LoRAs use.

Kohya's sd-scripts trains SDXL on the original (SGM) UNet, so its files name UNet layers by the
original blocks: `lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k` for the diffusers
module `down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k`; text encoders are `lora_te1_`
(CLIP ViT-L) and `lora_te2_` (OpenCLIP bigG, the one with the projection), `text_model_` included.
The key names are written here, by the test, from the layout's definition (input block
1 + b·(n+1) + l, output block b·(n+1) + l, inner index 1 = attentions; n = layers per block), so a
converter bug in the code under test cannot hide behind the same converter in the test.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from nodegraph_diffusion.paths import BUILTIN_DIR
from safetensors.torch import load_file, save_file

TINYXL = BUILTIN_DIR / "tinyxl"
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
ALPHA = 2.0  # Kohya copy: alpha 2 at rank 4 scales by 0.5; its up weights are doubled to compensate


def write_diffusers_lora(out: Path, seed: int, rank: int = 4, scale: float = 0.3) -> Path:
    """A LoRA on tinyxl's UNet and both text encoders, random A *and* B, in diffusers/peft layout."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel.from_pretrained(TINYXL, subfolder="unet", local_files_only=True)
    te = CLIPTextModel.from_pretrained(TINYXL, subfolder="text_encoder", local_files_only=True)
    te2 = CLIPTextModelWithProjection.from_pretrained(TINYXL, subfolder="text_encoder_2",
                                                      local_files_only=True)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=UNET_TARGETS))
    for encoder in (te, te2):
        encoder.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TE_TARGETS))
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for model in (unet, te, te2):
            for name, param in sorted(model.named_parameters()):
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(
        out.parent, unet_lora_layers=get_peft_model_state_dict(unet),
        text_encoder_lora_layers=get_peft_model_state_dict(te),
        text_encoder_2_lora_layers=get_peft_model_state_dict(te2),
        weight_name=out.name, safe_serialization=True,
    )
    return out


RESNET_SGM = {"conv1": "in_layers.2", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
              "time_emb_proj": "emb_layers.1"}


def sgm_name(module: str, layers_per_block: int) -> str:
    """A diffusers UNet module path in the original (SGM) block naming, dots kept: down block b layer l
    is input block 1 + b·(n+1) + l, up block b layer l output block b·(n+1) + l (inner 0 = the resnet,
    1 = the attention), the mid block's resnet 0 / attention / resnet 1 middle blocks 0 / 1 / 2."""
    n = layers_per_block
    block = re.match(r"(down|up)_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.*)", module)
    if block:
        side, b, inner, layer, rest = block[1], int(block[2]), block[3], int(block[4]), block[5]
        index = 1 + b * (n + 1) + layer if side == "down" else b * (n + 1) + layer
        where = "input_blocks" if side == "down" else "output_blocks"
        if inner == "resnets":
            return f"{where}.{index}.0.{RESNET_SGM.get(rest, rest)}"
        return f"{where}.{index}.1.{rest}"
    mid = re.match(r"mid_block\.(attentions|resnets)\.(\d+)\.(.*)", module)
    if mid and mid[1] == "attentions":
        return f"middle_block.1.{mid[3]}"
    if mid:
        return f"middle_block.{2 * int(mid[2])}.{RESNET_SGM.get(mid[3], mid[3])}"
    raise ValueError(f"no SGM name for {module}")


def kohya_xl_name(part: str, module: str, layers_per_block: int = 1) -> str:
    """The Kohya name of an SDXL module: lora_unet_ + SGM path, lora_te1_ / lora_te2_ + text_model path."""
    if part == "unet":
        return "lora_unet_" + sgm_name(module, layers_per_block).replace(".", "_")
    module = module if module.startswith("text_model.") else "text_model." + module
    return {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}[part] + module.replace(".", "_")


def to_kohya(peft_file: Path, out: Path, layers_per_block: int = 1, sgm: bool = True) -> Path:
    """Rewrite a diffusers-layout SDXL LoRA in Kohya naming (lora_unet_*, lora_te1_*, lora_te2_*, alpha);
    UNet blocks in SGM naming (sd-scripts' SDXL files) or, with `sgm=False`, diffusers naming."""
    state: dict[str, torch.Tensor] = {}
    for key, value in load_file(peft_file).items():
        part, rest = key.split(".", 1)
        module, kind = rest.rsplit(".lora_", 1)
        if part == "unet" and not sgm:
            name = "lora_unet_" + module.replace(".", "_")
        else:
            name = kohya_xl_name(part, module, layers_per_block)
        if kind.startswith("A"):
            state[f"{name}.lora_down.weight"] = value
            state[f"{name}.alpha"] = torch.tensor(ALPHA)
        else:
            state[f"{name}.lora_up.weight"] = value * (value.shape[1] / ALPHA)
    save_file(state, str(out))
    return out


def xl_pipe(scheduler: str = "default") -> Any:
    """StableDiffusionXLPipeline on builtin:tinyxl, weights owned like our loader's, our scheduler."""
    from diffusers import StableDiffusionXLPipeline
    from nodegraph_diffusion.loading import own_storage
    from nodegraph_diffusion.schedulers import make_scheduler
    from nodegraph_diffusion.types import SchedulerSpec

    pipe = StableDiffusionXLPipeline.from_pretrained(TINYXL, local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        own_storage(part)
    config = tuple(sorted(dict(pipe.scheduler.config).items()))
    pipe.scheduler = make_scheduler(SchedulerSpec(scheduler, config))
    return pipe
