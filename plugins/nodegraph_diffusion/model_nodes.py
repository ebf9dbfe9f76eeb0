"""Loader nodes: checkpoints, standalone VAEs, LoRAs. They output light handles, never modules.

Loading the weights happens later, when a consuming node runs (`loading.use_unet` & co.), through the
run's residency manager, so a graph that only changes a LoRA weight never reloads the base model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, NamedTuple

from pydantic import Field

from nodegraph.api import InputError, NodeContext, node
from nodegraph_diffusion import family_facts
from nodegraph_diffusion.families import available_families, family_named
from nodegraph_diffusion.loading import make_source, read_shapes, refuse_pickle, scheduler_config
from nodegraph_diffusion.lora import lora_file
from nodegraph_diffusion.lora_fit import lora_misfit, unet_width
from nodegraph_diffusion.paths import (
    LoraRef,
    ModelRef,
    TokenizerRef,
    VaeRef,
    fingerprint_path,
    resolve_model_ref,
)
from nodegraph_diffusion.types import (
    LoraPatch,
    SchedulerSpec,
    TextEncoderHandle,
    UNetHandle,
    VaeHandle,
)


class LoadedModel(NamedTuple):
    unet: UNetHandle
    text_encoder: TextEncoderHandle
    vae: VaeHandle
    scheduler: SchedulerSpec


class LoraOutputs(NamedTuple):
    unet: UNetHandle
    text_encoder: TextEncoderHandle


# 1.1: SD3.5 and Flux.1 single files (their shipped configs), t5_tokenizer
@node("diffusion.load_model", version="1.1.0", facts=family_facts.model_facts)
def load_model(
    ctx: NodeContext,
    path: Annotated[ModelRef, Field(description="builtin:NAME, a diffusers folder, a .safetensors "
                                                "checkpoint (SD1.x, SDXL, SD3.5, ComfyUI Flux.1 all-in-one), "
                                                "or a name in the model dirs")],
    tokenizer: Annotated[TokenizerRef | None, Field(
        description="CLIP tokenizer folder (vocab.json + merges.txt) for single files (default: CLIP's, "
                    "built from the shipped merges)")] = None,
    t5_tokenizer: Annotated[TokenizerRef | None, Field(
        description="T5 tokenizer folder (tokenizer.json or spiece.model) for SD3.5/Flux.1 single files "
                    "with T5: not shippable")] = None,
) -> LoadedModel:
    """Load a model (diffusers folder or single file) as denoiser, text encoders, VAE and scheduler."""
    where = resolve_model_ref(path, ctx, "checkpoint")
    tok = resolve_model_ref(tokenizer, ctx, "tokenizer") if tokenizer else None
    t5_tok = resolve_model_ref(t5_tokenizer, ctx, "tokenizer") if t5_tokenizer else None
    source = make_source(where, ctx, tokenizer=tok, t5_tokenizer=t5_tok)
    if source.format not in ("diffusers", "single_file"):
        raise InputError(f"'{where}' is not a full model (UNet + text encoder + VAE); use "
                         "diffusion.load_vae for a standalone VAE", field="path")
    config = scheduler_config(source)
    spec = SchedulerSpec(name="default",  # the model's own scheduler class and config
                         base_config=tuple(sorted((k, _freeze(v)) for k, v in config.items())))
    return LoadedModel(UNetHandle(source), TextEncoderHandle(source), VaeHandle(source), spec)


# 1.1: `family` for standalone VAE files (SD1.x's and SDXL's share their architecture)
# 1.2: SD3's and Flux.1's 16-channel VAE files (ae.safetensors), told from SD1.x's by latent channels
@node("diffusion.load_vae", version="1.2.0", facts=family_facts.vae_facts)
def load_vae(
    ctx: NodeContext,
    path: Annotated[VaeRef, Field(description="A VAE folder, a standalone VAE file, or a full model "
                                              "whose VAE is taken")],
    family: Annotated[str, Field(min_length=1, description="Model family a standalone VAE file is for "
                                 "(sd1, sdxl, sd3, flux: BFL's ae.safetensors): its scaling factor; "
                                 "auto = the family of the latents "
                                 "it decodes (set it for encoding)")] = "auto",
) -> VaeHandle:
    """Load a VAE (to replace a model's own, e.g. a better decoder, or SDXL's fp16-fixed VAE)."""
    if family != "auto":
        try:
            family_named(family)
        except KeyError as exc:
            raise InputError(str(exc.args[0]), field="family") from exc
    return VaeHandle(make_source(resolve_model_ref(path, ctx, "vae"), ctx, vae_family=family))


@node("diffusion.load_lora", version="1.0.0", facts=family_facts.lora_facts)
def load_lora(
    ctx: NodeContext,
    unet: Annotated[UNetHandle, Field(description="The UNet to patch")],
    text_encoder: Annotated[TextEncoderHandle, Field(description="The text encoder to patch")],
    path: Annotated[LoraRef, Field(description="LoRA .safetensors for the model's family (SD1.x, SDXL: "
                                               "diffusers/peft or Kohya/A1111 format, LyCORIS LoHa/LoKr "
                                               "too; Flux.1: diffusers, Kohya or BFL/ComfyUI format; "
                                               "SD3: diffusers format)")],
    unet_weight: Annotated[float, Field(ge=-10, le=10, description="Strength on the UNet (0 = off)")] = 1.0,
    text_encoder_weight: Annotated[float, Field(
        ge=-10, le=10, description="Strength on the text encoder(s) (0 = off)")] = 1.0,
) -> LoraOutputs:
    """Attach a LoRA to a UNet and text encoder at given strengths; chain nodes to stack LoRAs."""
    family = family_named(unet.source.family)
    if not family.supports_lora:
        raise InputError(f"LoRA files are not supported yet for {family.label} models", field="unet")
    file = lora_file(resolve_model_ref(path, ctx, "lora"))
    refuse_pickle(file, ctx)
    if file.suffix.lower() == ".safetensors":
        # fail here, at the node that names the file, if it is corrupt or made for another family
        source = unet.source
        width = unet_width(Path(source.path if source.format == "diffusers" else source.config_dir or ""))
        misfit = lora_misfit(family, read_shapes(file, ctx), width, available_families())
        if misfit:
            raise InputError(f"'{file}': {misfit}", field="path")
    fingerprint = fingerprint_path(Path(file))
    patch = LoraPatch(str(Path(file).resolve()), fingerprint, f"lora_{fingerprint[:16]}",
                      float(unet_weight), float(text_encoder_weight))
    return LoraOutputs(replace(unet, loras=(*unet.loras, patch)),
                       replace(text_encoder, loras=(*text_encoder.loras, patch)))


def _freeze(value: object) -> object:
    """JSON config values as hashable ones (lists -> tuples), so SchedulerSpec stays hashable."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value
