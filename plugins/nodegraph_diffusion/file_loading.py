"""Components out of single files and separate component files, read by diffusers' own converters.

Two kinds of source come here (loading.py hands them over):
- `single_file`: one checkpoint holding several components under key prefixes its family names
  (SDXL's `conditioner.embedders.N.`, SD3's and Flux's `text_encoders.clip_l/clip_g/t5xxl.`); each
  component reads only its own keys, so 4 parts of a 16 GB file are not read 4 times;
- `component_files`: `diffusion.load_text_encoders`' separate files (ComfyUI's `models/text_encoders/
  clip_l.safetensors`, `clip_g.safetensors`, `t5xxl_fp16.safetensors`), in transformers' own names.
  Their keys are given the all-in-one prefix of the component, so the same diffusers converters
  (`create_diffusers_clip_model_from_ldm`, `create_diffusers_t5_model_from_checkpoint`) read both.
fp8-stored tensors (`t5xxl_fp8_e4m3fn.safetensors`, Comfy-Org's fp8 checkpoints) are upcast to the run's
dtype as they are read; ComfyUI's "scaled" fp8 files (a `scaled_fp8` marker, a `.scale_weight` per
weight) are multiplied back by their scales first. Casting rounds nothing: an fp8 value is exact in
bf16, fp16 and fp32.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from nodegraph.api import InputError, NodeContext
from nodegraph_diffusion.families import family_named
from nodegraph_diffusion.file_parts import part_path
from nodegraph_diffusion.owned import own_storage
from nodegraph_diffusion.types import ModelSource

FLOAT8 = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
SCALED_FP8_MARKER = "scaled_fp8"
SCALE_SUFFIX = ".scale_weight"
# the key that tells where a separate file's encoder starts: CLIP (nested and transformers >= 5.6's
# flattened CLIPTextModel names) and T5
CLIP_PROBES = ("text_model.embeddings.token_embedding.weight", "embeddings.token_embedding.weight")
T5_PROBE = "encoder.block.0.layer.0.SelfAttention.q.weight"
LABELS = {"text_encoder": "text encoder (CLIP-L)", "text_encoder_2": "second text encoder",
          "text_encoder_3": "third text encoder (T5)", "vae": "VAE", "transformer": "transformer",
          "unet": "UNet"}


def run_float_dtype(ctx: NodeContext) -> Any:
    """The dtype fp8 weights are upcast to: the run's, if a float type, else fp32."""
    import torch

    dtype = getattr(ctx, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def upcast_float8(state: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """`state` with fp8 tensors as `dtype` (scaled fp8: times their `.scale_weight`), markers dropped."""
    scaled = SCALED_FP8_MARKER in state or any(k.endswith(SCALED_FP8_MARKER) for k in state)
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.endswith((SCALED_FP8_MARKER, SCALE_SUFFIX, ".scale_input")):
            continue
        if str(getattr(value, "dtype", "")).removeprefix("torch.") in FLOAT8:
            value = value.to(dtype)
            scale = state.get(key.removesuffix(".weight") + SCALE_SUFFIX) if scaled else None
            if scale is not None:
                value = value * scale.to(dtype)
        out[key] = value
    return out


def encoder_prefix(keys: Any) -> tuple[str, str] | None:
    """(kind, prefix) of a separate text-encoder file: 'clip' or 't5' and the prefix before the
    encoder's own names ('' for ComfyUI's files), or None if it holds neither."""
    names = set(keys)
    for name in names:
        for probe in CLIP_PROBES:
            if name.endswith(probe):
                return "clip", name[: -len(probe)]
        if name.endswith(T5_PROBE):
            return "t5", name[: -len(T5_PROBE)]
    return None


def as_checkpoint_layout(state: dict[str, Any], target: str) -> dict[str, Any]:
    """A separate encoder file's state under the all-in-one prefix `target` (`text_encoders.clip_l.`):
    CLIP as `target + transformer.text_model.*` (text_projection beside it), T5 as `target +
    transformer.*`, the names diffusers' single-file converters read."""
    found = encoder_prefix(state)
    if found is None:
        return {}
    kind, prefix = found
    flat = kind == "clip" and not any(k.startswith(prefix + "text_model.") for k in state)
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if flat and not rest.startswith("text_projection"):
            rest = "text_model." + rest
        out[f"{target}transformer.{rest}"] = value
    return out


def component_state(source: ModelSource, component: str, ctx: NodeContext) -> dict[str, Any]:
    """The keys of `component` in the all-in-one layout, fp8 upcast: a single file's own keys (its
    family's prefixes for the component; a family that names none: the whole file), or a separate
    file's, re-prefixed."""
    from nodegraph_diffusion.loading import read_state_dict

    path = part_path(source, component)
    if path is None:
        raise InputError(f"'{source.path}' holds no {LABELS.get(component, component)}: load it from its "
                         "own file (diffusion.load_text_encoders for text encoders, diffusion.load_vae for "
                         "a VAE)")
    family = family_named(source.family) if source.family else None
    prefixes = family.single_file_prefixes(component) if family else None
    if source.format == "component_files":
        state = as_checkpoint_layout(read_state_dict(Path(path), ctx), (prefixes or ("",))[0])
    else:
        state = read_state_dict(Path(path), ctx, prefixes=prefixes)
    return upcast_float8(state, run_float_dtype(ctx))


def file_text_encoder(source: ModelSource, component: str, ctx: NodeContext) -> Any:
    """A CLIP or T5 text encoder of a single file or a separate file, with the class and config the
    source's config folder names for `component` (SD3's CLIP-L: diffusers gives it the identity
    projection, as the SD3 checkpoints' CLIP-L is used unprojected)."""
    import transformers
    from diffusers.loaders.single_file_utils import (
        create_diffusers_clip_model_from_ldm,
        create_diffusers_t5_model_from_checkpoint,
    )

    config = Path(source.config_dir or "")
    index = json.loads((config / "model_index.json").read_text())
    named = str((index.get(component) or [None, "CLIPTextModel"])[1])
    cls = getattr(transformers, named, transformers.CLIPTextModel)
    state = component_state(source, component, ctx)
    kwargs = {"subfolder": component, "config": str(config), "local_files_only": True}
    try:
        if named.startswith("T5"):
            model = create_diffusers_t5_model_from_checkpoint(cls, state, **kwargs)
            model.tie_weights()  # diffusers leaves the tied `encoder.embed_tokens` on the meta device
        else:
            model = create_diffusers_clip_model_from_ldm(cls, state, **kwargs)
    except (ValueError, RuntimeError, KeyError) as exc:  # keys or shapes not of this encoder
        raise InputError(f"cannot read the {LABELS.get(component, component)} from "
                         f"'{part_path(source, component)}': {exc}") from exc
    return own_storage(model.eval())


def component_files_key(source: ModelSource, component: str) -> str:
    """Residency key of one encoder of separate files: its own file's fingerprint and the config that
    reads it (Flux's CLIP-L is a CLIPTextModel, SD3's a CLIPTextModelWithProjection)."""
    from nodegraph_diffusion.paths import fingerprint_path

    path = part_path(source, component)
    if path is None or component.startswith("tokenizer"):
        extra = f":{fingerprint_path(Path(source.tokenizer_dir))}" if source.tokenizer_dir else ""
        return f"{source.fingerprint}:{component}{extra}"
    return f"{fingerprint_path(Path(path))}:{component}:{source.base}"


def tokenizer_folder(source: ModelSource, component: str, given: str | None) -> Path:
    """Where a tokenizer is read from: the folder the user gave, else the model's own `component`
    folder (a diffusers model) or the shipped config's (a single file)."""
    if given:
        return Path(given)
    base = source.path if source.format == "diffusers" else source.config_dir or ""
    return Path(base) / component


def load_t5_tokenizer(source: ModelSource, component: str) -> Any:
    """T5's tokenizer: the `t5_tokenizer` folder given, else the model's (a diffusers folder, or a tiny
    shipped config that has one). It is a sentencepiece model no installed package ships, so a real
    single file, or separate encoder files, need the user's folder."""
    from transformers import T5TokenizerFast

    folder = tokenizer_folder(source, component, source.t5_tokenizer_dir)
    if not ((folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file()):
        where = (f"the folder '{folder}' holds neither tokenizer.json nor spiece.model"
                 if source.t5_tokenizer_dir
                 else f"T5's tokenizer is not shipped with nodegraph (no installed package carries it) and "
                      f"'{source.path}' has none")
        raise InputError(f"{where}; pass `t5_tokenizer:` a folder holding T5's tokenizer.json or "
                         "spiece.model: the tokenizer_2 folder of black-forest-labs/FLUX.1-dev, the "
                         "tokenizer_3 folder of stabilityai/stable-diffusion-3.5-medium, or "
                         "google/t5-v1_1-xxl", field="t5_tokenizer")
    if not (folder / "tokenizer.json").is_file() and importlib.util.find_spec("sentencepiece") is None:
        raise InputError(f"'{folder}' holds T5's spiece.model but no tokenizer.json, and reading "
                         "spiece.model needs the sentencepiece package (pip install sentencepiece); or use a "
                         "folder with tokenizer.json (FLUX.1-dev's tokenizer_2)", field="t5_tokenizer")
    try:
        return T5TokenizerFast.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as exc:  # a folder of something else
        raise InputError(f"cannot read T5's tokenizer from '{folder}': {exc}", field="t5_tokenizer") from exc
