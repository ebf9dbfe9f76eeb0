"""LoRA files -> peft adapters on resident models, activated per use with per-handle weights.

Reading and injecting is diffusers' and peft's job: the family's LoRA pipeline class
(`StableDiffusionPipeline` for SD1.x, `StableDiffusionXLPipeline` for SDXL, `FluxPipeline`,
`StableDiffusion3Pipeline`: `ModelFamily.lora_pipeline`) reads diffusers/peft-format files and
converts Kohya/A1111 ones (`lora_unet_...`, `lora_te_...`, `lora_te1_`/`lora_te2_`, `.alpha`; SDXL's
original-layout block names with the UNet's config) in `lora_state_dict` (the family's hook of that
name: Flux's adds the BFL/ComfyUI layout, flux_lora.py), and its `load_lora_into_unet`/
`load_lora_into_transformer` (`ModelFamily.load_lora_into_denoiser`) and `load_lora_into_text_encoder`
inject peft layers — the very calls `load_lora_weights` makes, minus the pipeline object (whose
`scale` state leaks between calls, see DESIGN). Part "unet" below is the denoiser, a UNet or a
transformer. Each file becomes one named adapter per resident model (UNet and each of the
family's `lora_components` text encoders), loaded once; changing a weight only calls `set_adapters`, so
the base model is never reloaded. LyCORIS LoHa/LoKr files take the same route as peft LoHa/LoKr
adapters (lycoris.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nodegraph.api import InputError, NodeContext
from nodegraph_diffusion.families.base import ModelFamily
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


def read_lora(path: Path, ctx: NodeContext, family: ModelFamily,
              denoiser: Any = None) -> tuple[dict[str, Any], Any, Any]:
    """(state_dict, network_alphas, metadata) in diffusers naming, whatever the file's format.

    The family reads it as its pipeline's `load_lora_weights` does (`ModelFamily.lora_state_dict`);
    `denoiser`, the resident UNet/transformer, lets a family use its config (SDXL's original-layout
    Kohya block names, Flux's fused linear1 widths)."""
    from nodegraph_diffusion.loading import read_shapes, read_state_dict

    if path.suffix.lower() == ".safetensors":
        read_shapes(path, ctx)  # a truncated file becomes an InputError naming it
        source: Any = str(path)
    else:
        source = read_state_dict(path, ctx)
    try:
        state, alphas, metadata = family.lora_state_dict(source, denoiser)
    except (ValueError, KeyError) as exc:
        raise InputError(f"'{path}' is not a LoRA file diffusers understands: {exc}", field="path") from exc
    if not state or not all("lora" in k for k in state):
        raise InputError(f"'{path}' is not a LoRA file (no lora_A/lora_B or lora_down/lora_up weights)",
                         field="path")
    return state, alphas, metadata


def _loaded_adapters(model: Any) -> set[str]:
    return set(getattr(model, "peft_config", None) or {})


def _load_lycoris(model: Any, patch: LoraPatch, part: str, family: ModelFamily, ctx: NodeContext) -> bool:
    """Load a LyCORIS LoHa/LoKr file as a peft adapter (lycoris.py); False if the file is no such file."""
    from nodegraph_diffusion.loading import read_shapes, read_state_dict
    from nodegraph_diffusion.lycoris import load_lycoris_adapter, lycoris_kind

    path = Path(patch.path)
    if lycoris_kind(list(read_shapes(path, ctx))) is None:
        return False
    state = read_state_dict(path, ctx)
    if family.lora_sgm_names and part == "unet":
        from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

        state = _maybe_map_sgm_blocks_to_diffusers(dict(state), model.config)
    load_lycoris_adapter(model, state, part, patch.name, path)
    return True


def unplaced_unet_layers(unet: Any, state: dict[str, Any], prefix: str = "unet") -> tuple[list[str], int]:
    """(the denoiser layers a LoRA state dict (diffusers naming, `prefix.`: unet, transformer) names
    that `unet` lacks, how many denoiser layers it names in all).

    diffusers only warns about such keys and loads the rest, so an SD1.x LoRA on an SDXL UNet would
    quietly patch the few layers whose names happen to exist in both. The keys go through diffusers'
    own conversion to peft names first, as `load_lora_adapter` does."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    own = {k.removeprefix(f"{prefix}."): v for k, v in state.items() if k.startswith(f"{prefix}.")}
    if not own:
        return [], 0
    if "lora_A" not in next(iter(own)):
        own = convert_unet_state_dict_to_peft(own)
    named = {k.split(".lora_")[0] for k in own if ".lora_" in k}
    layers = {re.sub(r"\.base_layer\b", "", name) for name, _ in unet.named_modules()}
    return sorted(named - layers), len(named)


def _check_unet_layers(unet: Any, state: dict[str, Any], path: Path, family: ModelFamily) -> None:
    """Refuse a LoRA naming UNet layers this UNet lacks: most likely another family's file, and a
    LoRA half applied (what diffusers does, with a warning) is not the picture its author made."""
    missing, named = unplaced_unet_layers(unet, state, family.denoiser_component)
    if missing:
        what = "UNet" if family.denoiser_component == "unet" else family.denoiser_component
        raise InputError(f"the LoRA '{path}' (diffusion.load_lora) does not fit this {family.label} {what}: "
                         f"{len(missing)} of its {named} {what} layers are not in it (e.g. "
                         f"{', '.join(missing[:2])}); a LoRA for another model family?")


def _check_components(state: dict[str, Any], path: Path, family: ModelFamily) -> None:
    """Refuse a file of which diffusers would load nothing into this family's models (it only logs)."""
    parts = {k.split(".", 1)[0] for k in state}
    if not parts & set(family.lora_components):
        raise InputError(f"the LoRA '{path}' (diffusion.load_lora) has no weights for a {family.label} "
                         f"model's {', '.join(family.lora_components)} (it names {', '.join(sorted(parts))})",
                         field="path")


def _load_lora(model: Any, patch: LoraPatch, part: str, family: ModelFamily, ctx: NodeContext) -> None:
    import diffusers

    path = Path(patch.path)
    loader = getattr(diffusers, family.lora_pipeline)
    try:
        if part == "unet":  # the denoiser: a UNet or a transformer
            state, alphas, metadata = read_lora(path, ctx, family, model)
            _check_components(state, path, family)
            _check_unet_layers(model, state, path, family)
            family.load_lora_into_denoiser(state, alphas, model, patch.name, metadata)
        else:  # text-encoder keys are not remapped: no denoiser needed
            state, alphas, metadata = read_lora(path, ctx, family)
            loader.load_lora_into_text_encoder(
                state, network_alphas=alphas, text_encoder=model, prefix=part, lora_scale=1.0,
                adapter_name=patch.name, metadata=metadata,
            )
    except RuntimeError as exc:  # load_state_dict: same layer names, other shapes (diffusers undoes the rest)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = next((line for line in lines if "size mismatch" in line), lines[0] if lines else "")
        raise InputError(f"the LoRA '{path}' (diffusion.load_lora) does not fit this {family.label} model's "
                         f"{part} (a LoRA for another model family?): {why}") from exc


def _load_adapter(model: Any, patch: LoraPatch, part: str, family: ModelFamily, ctx: NodeContext) -> None:
    if not _load_lycoris(model, patch, part, family, ctx):
        _load_lora(model, patch, part, family, ctx)
    if patch.name not in _loaded_adapters(model):
        absent = getattr(model, _ABSENT_ATTR, set())
        absent.add(patch.name)
        setattr(model, _ABSENT_ATTR, absent)


def activate_loras(model: Any, loras: tuple[LoraPatch, ...], part: str, family: ModelFamily,
                   ctx: NodeContext) -> None:
    """Make exactly `loras` active on `model` (the component `part`: 'unet' or one of the family's text
    encoders) at their weights for that part: `unet_weight`, else `text_encoder_weight` (every text
    encoder alike, as diffusers' `set_adapters` with one weight and ComfyUI's strength_clip do).

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
            _load_adapter(model, patch, part, family, ctx)
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
