"""LoRA files -> peft adapters on resident models, activated per use with per-handle weights.

Reading and injecting is diffusers' and peft's job: `StableDiffusionPipeline.lora_state_dict` reads
diffusers/peft-format files and converts Kohya/A1111 ones (`lora_unet_...`, `lora_te_...`, `.alpha`),
and `load_lora_into_unet`/`load_lora_into_text_encoder` inject peft layers — the very calls
`load_lora_weights` makes, minus the pipeline object (whose `scale` state leaks between calls, see
DESIGN). Each file becomes one named adapter per resident model, loaded once; changing a weight only
calls `set_adapters`, so the base model is never reloaded. LyCORIS LoHa/LoKr files take the same
route as peft LoHa/LoKr adapters (lycoris.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodegraph.api import InputError, NodeContext
from nodegraph_diffusion.types import LoraPatch

_ABSENT_ATTR = "_nodegraph_lora_absent"  # adapters whose file has no weights for this model


def lora_file(path: Path) -> Path:
    """A LoRA reference may name a file or a folder holding exactly one .safetensors file."""
    if not path.is_dir():
        return path
    files = sorted(path.glob("*.safetensors"))
    if len(files) != 1:
        raise InputError(f"LoRA folder '{path}' must hold exactly one .safetensors file, found {len(files)}",
                         field="path")
    return files[0]


def read_lora(path: Path, ctx: NodeContext) -> tuple[dict[str, Any], Any, Any]:
    """(state_dict, network_alphas, metadata) in diffusers naming, whatever the file's format."""
    from diffusers import StableDiffusionPipeline

    from nodegraph_diffusion.loading import read_shapes, read_state_dict

    if path.suffix.lower() == ".safetensors":
        read_shapes(path, ctx)  # a truncated file becomes an InputError naming it
        source: Any = str(path)
    else:
        source = read_state_dict(path, ctx)
    try:
        state, alphas, metadata = StableDiffusionPipeline.lora_state_dict(source, return_lora_metadata=True)
    except (ValueError, KeyError) as exc:
        raise InputError(f"'{path}' is not a LoRA file diffusers understands: {exc}", field="path") from exc
    if not state or not all("lora" in k for k in state):
        raise InputError(f"'{path}' is not a LoRA file (no lora_A/lora_B or lora_down/lora_up weights)",
                         field="path")
    return state, alphas, metadata


def _loaded_adapters(model: Any) -> set[str]:
    return set(getattr(model, "peft_config", None) or {})


def _load_lycoris(model: Any, patch: LoraPatch, part: str, ctx: NodeContext) -> bool:
    """Load a LyCORIS LoHa/LoKr file as a peft adapter (lycoris.py); False if the file is no such file."""
    from nodegraph_diffusion.loading import read_shapes, read_state_dict
    from nodegraph_diffusion.lycoris import load_lycoris_adapter, lycoris_kind

    path = Path(patch.path)
    if lycoris_kind(list(read_shapes(path, ctx))) is None:
        return False
    load_lycoris_adapter(model, read_state_dict(path, ctx), part, patch.name, path)
    return True


def _load_lora(model: Any, patch: LoraPatch, part: str, ctx: NodeContext) -> None:
    from diffusers import StableDiffusionPipeline

    state, alphas, metadata = read_lora(Path(patch.path), ctx)
    if part == "unet":
        StableDiffusionPipeline.load_lora_into_unet(
            state, network_alphas=alphas, unet=model, adapter_name=patch.name, metadata=metadata
        )
    else:
        StableDiffusionPipeline.load_lora_into_text_encoder(
            state, network_alphas=alphas, text_encoder=model, lora_scale=1.0, adapter_name=patch.name,
            metadata=metadata,
        )


def _load_adapter(model: Any, patch: LoraPatch, part: str, ctx: NodeContext) -> None:
    if not _load_lycoris(model, patch, part, ctx):
        _load_lora(model, patch, part, ctx)
    if patch.name not in _loaded_adapters(model):
        absent = getattr(model, _ABSENT_ATTR, set())
        absent.add(patch.name)
        setattr(model, _ABSENT_ATTR, absent)


def activate_loras(model: Any, loras: tuple[LoraPatch, ...], part: str, ctx: NodeContext) -> None:
    """Make exactly `loras` active on `model` ('unet' or 'text_encoder') at their weights for that part.

    Weight-0 patches are left out; with none left every adapter is disabled, which gives the base
    model's output exactly. The same file listed twice adds its weights.
    """
    weights: dict[str, float] = {}
    for patch in loras:
        weight = patch.unet_weight if part == "unet" else patch.text_encoder_weight
        if weight == 0:
            continue
        absent = getattr(model, _ABSENT_ATTR, set())
        if patch.name not in _loaded_adapters(model) and patch.name not in absent:
            _load_adapter(model, patch, part, ctx)
        if patch.name in _loaded_adapters(model):
            weights[patch.name] = weights.get(patch.name, 0.0) + float(weight)
    if not _loaded_adapters(model):
        return
    if part == "unet":
        if not weights:
            model.disable_lora()
            return
        model.enable_lora()
        model.set_adapters(list(weights), list(weights.values()))
    else:
        from diffusers.loaders.lora_base import (
            disable_lora_for_text_encoder,
            enable_lora_for_text_encoder,
            set_adapters_for_text_encoder,
        )

        if not weights:
            disable_lora_for_text_encoder(model)
            return
        enable_lora_for_text_encoder(model)
        set_adapters_for_text_encoder(list(weights), model, list(weights.values()))


def save_tiny_style_lora(model_folder: Path, out_folder: Path, seed: int = 1, rank: int = 4) -> Path:
    """Build the built-in tiny style LoRA for `model_folder`: random A *and* B (a fresh LoRA has B = 0
    and does nothing), on the UNet's attention projections and the text encoder's attention."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(model_folder, subfolder="unet", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(model_folder, subfolder="text_encoder",
                                                 local_files_only=True)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    text_encoder.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                 "out_proj"]))
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for model in (unet, text_encoder):
            for name, param in sorted(model.named_parameters()):
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    out_folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        out_folder,
        unet_lora_layers=get_peft_model_state_dict(unet),
        text_encoder_lora_layers=get_peft_model_state_dict(text_encoder),
        weight_name=f"{out_folder.name}.safetensors",
        safe_serialization=True,
    )
    return out_folder / f"{out_folder.name}.safetensors"
