"""diffusion.load_text_encoders: a model's text encoders from separate files, as ComfyUI users keep them.

ComfyUI's `models/text_encoders/` (formerly `models/clip/`) holds `clip_l.safetensors`,
`clip_g.safetensors`, `t5xxl_fp16.safetensors`, `t5xxl_fp8_e4m3fn.safetensors`: the encoders in
transformers' own names, one per file. Given the family, each file becomes one component of a
`TextEncoderHandle` read with the family's shipped config (`encoder_files`/`encoder_config` of the
family: Flux.1 CLIP-L + T5; SD3 CLIP-L + CLIP-G, T5 optional), so a transformer-only file
(`diffusion.load_transformer`), these and `diffusion.load_vae` make a complete model. Each file is
checked against the slot it is given before anything loads: a CLIP-G where T5 is expected, or a CLIP-L
where CLIP-G is, is an input error naming the field. Weights load when `encode_text` runs
(file_loading.py), fp8 upcast.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from nodegraph.api import FactsRequest, InputError, NodeContext, node
from nodegraph_diffusion.families import ModelFamily, family_named
from nodegraph_diffusion.file_loading import CLIP_PROBES, T5_PROBE, encoder_prefix
from nodegraph_diffusion.paths import TextEncoderRef, TokenizerRef, fingerprint_path, resolve_model_ref
from nodegraph_diffusion.types import ModelSource, TextEncoderHandle

CONFIGS_DIR = Path(__file__).parent / "configs"
KINDS = {"clip": "a CLIP text encoder", "t5": "a T5 encoder"}


def encoder_file_kind(shapes: dict[str, tuple[int, ...]]) -> tuple[str, int] | None:
    """('clip' or 't5', width) of a text-encoder file, from its tensor names and shapes."""
    found = encoder_prefix(shapes)
    if found is None:
        return None
    kind, prefix = found
    if kind == "t5":
        return kind, int(shapes[prefix + T5_PROBE][1])
    shape = next(shapes[prefix + p] for p in CLIP_PROBES if prefix + p in shapes)
    return kind, int(shape[1])


def expected_encoder(config_dir: Path, component: str) -> tuple[str, int]:
    """('clip' or 't5', width) the config folder's `component` takes."""
    config = json.loads((config_dir / component / "config.json").read_text())
    if str(config.get("model_type", "")).startswith("t5"):
        return "t5", int(config["d_model"])
    return "clip", int(config["hidden_size"])


def config_folder(family: ModelFamily, config: str, ctx: NodeContext | None) -> Path:
    """The folder whose text-encoder configs read the files: the family's shipped one (`auto`), a shipped
    config by name, or a diffusers folder of the family."""
    name = family.encoder_config if config == "auto" else config
    shipped = (*family.config_names, family.encoder_config)
    if (CONFIGS_DIR / name / "model_index.json").is_file() and name in shipped:
        return CONFIGS_DIR / name
    known = ", ".join(dict.fromkeys((family.encoder_config, *family.config_names)))
    wanted = f"config '{config}' is neither a shipped {family.label} config ({known}) nor a diffusers folder"
    try:
        folder = resolve_model_ref(config, ctx, "checkpoint") if ctx is not None else Path(config)
    except InputError as exc:  # not found: said at `config`, with where it looked
        raise InputError(f"{wanted}: {exc.message}", field="config") from exc
    if not (folder / "model_index.json").is_file():
        raise InputError(f"{wanted} (no model_index.json in '{folder}')", field="config")
    return folder


def _family(name: str) -> ModelFamily:
    try:
        family = family_named(name)
    except KeyError as exc:
        raise InputError(str(exc.args[0]), field="family") from exc
    if not family.encoder_files:
        raise InputError(f"{family.label} models take no separate text-encoder files here (Flux.1 and SD3 "
                         "do); load the checkpoint with diffusion.load_model", field="family")
    return family


def text_encoder_files_facts(req: FactsRequest) -> dict[str, dict[str, Any]]:
    """The handle is of the family it is told (encode_text and the sampler check the rest)."""
    told = req.literals.get("family")
    return {"out": {"family": told, "made_by": req.node} if isinstance(told, str) else {}}


@node("diffusion.load_text_encoders", version="1.0.0", facts=text_encoder_files_facts)
def load_text_encoders(
    ctx: NodeContext,
    family: Annotated[str, Field(min_length=1, description="Model family the encoders are for: flux "
                                 "(CLIP-L + T5) or sd3 (CLIP-L + CLIP-G, T5 optional)")],
    clip_l: Annotated[TextEncoderRef | None, Field(
        description="CLIP-L file (ComfyUI's clip_l.safetensors)")] = None,
    clip_g: Annotated[TextEncoderRef | None, Field(
        description="CLIP-G file (SD3: clip_g.safetensors)")] = None,
    t5: Annotated[TextEncoderRef | None, Field(description="T5-XXL file (t5xxl_fp16.safetensors or the fp8 "
                                               "t5xxl_fp8_e4m3fn.safetensors, upcast as it loads)")] = None,
    config: Annotated[str, Field(min_length=1, description="Config that reads them: auto (the family's: "
                                 "flux-dev, sd35-medium), a shipped config name or a diffusers "
                                 "folder")] = "auto",
    tokenizer: Annotated[TokenizerRef | None, Field(description="CLIP tokenizer folder (default: CLIP's, "
                                                    "built from the shipped merges)")] = None,
    t5_tokenizer: Annotated[TokenizerRef | None, Field(
        description="T5 tokenizer folder (tokenizer.json or spiece.model): not shippable, needed with "
                    "t5")] = None,
) -> TextEncoderHandle:
    """Load a Flux.1 or SD3 model's text encoders from separate files (ComfyUI's models/text_encoders)."""
    fam = _family(family)
    folder = config_folder(fam, config, ctx)
    given = {"clip_l": clip_l, "clip_g": clip_g, "t5": t5}
    slots = {name for name, _, _ in fam.encoder_files}
    for name, value in given.items():
        if value is not None and name not in slots:
            raise InputError(f"{fam.label} models have no {name} encoder; leave {name} unset", field=name)
    parts, prints = [], []
    for name, component, required in fam.encoder_files:
        ref = given[name]
        if ref is None:
            if required:
                raise InputError(f"{fam.label} needs its {name} text encoder: give its file", field=name)
            continue
        path = resolve_model_ref(ref, ctx, "text_encoder").resolve()
        check_file(path, ctx, name, folder, component)
        parts.append((component, str(path)))
        prints.append(fingerprint_path(path))
    tok = str(resolve_model_ref(tokenizer, ctx, "tokenizer").resolve()) if tokenizer else None
    t5_tok = str(resolve_model_ref(t5_tokenizer, ctx, "tokenizer").resolve()) if t5_tokenizer else None
    digest = hashlib.sha256("|".join([str(folder), *prints]).encode()).hexdigest()
    source = ModelSource(parts[0][1], digest, "component_files", folder.name, str(folder), tok, fam.name,
                         parts=tuple(parts), t5_tokenizer_dir=t5_tok)
    return TextEncoderHandle(source)


def check_file(path: Path, ctx: NodeContext, field: str, folder: Path, component: str) -> None:
    """Refuse a file that is not the encoder the slot takes (kind and width), or not readable."""
    from nodegraph_diffusion.loading import read_shapes

    shapes = read_shapes(path, ctx, field)
    found = encoder_file_kind(shapes)
    want_kind, want_width = expected_encoder(folder, component)
    wanted = f"{KINDS[want_kind]} {want_width} wide (config {folder.name})"
    if found is None:
        raise InputError(f"'{path}' holds no CLIP or T5 text encoder; {field} takes {wanted}", field=field)
    kind, width = found
    if (kind, width) != (want_kind, want_width):
        raise InputError(f"'{path}' is {KINDS[kind]} {width} wide, but {field} takes {wanted}", field=field)
