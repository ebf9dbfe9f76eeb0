"""Materialise model handles through the run's residency manager.

A handle names weights (a `ModelSource`) plus LoRA patches; `use_unet`/`use_text_encoder`/`use_vae`
load each component once per process (residency key = content fingerprint + component), pin it for the
block, and set exactly the handle's LoRAs with their weights (peft adapters, loaded once per resident
model). With no active LoRA the adapters are disabled, so the output is the base model's, bit for bit.

Formats: diffusers folders, single components' folders (a `vae/` folder), and original-layout single
files, read by diffusers' `from_single_file` with a *local* config folder shipped in `configs/` (without
one diffusers reaches for the Hub). Pickled weights are refused unless `--allow-pickle`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nodegraph.api import InputError, NodeContext
from nodegraph_diffusion.clip_tokenizer import CLIP_TOKENIZER_PADS
from nodegraph_diffusion.families import available_families, family_named, file_family, folder_family
from nodegraph_diffusion.file_loading import (
    component_files_key,
    component_state,
    file_text_encoder,
    load_t5_tokenizer,
    tokenizer_folder,
)
from nodegraph_diffusion.file_parts import single_file_parts
from nodegraph_diffusion.load_errors import missing_component, pickle_load_problem, weight_files
from nodegraph_diffusion.owned import diffusers_from_folder, own_storage, read_safetensors
from nodegraph_diffusion.paths import fingerprint_path
from nodegraph_diffusion.single_file import detect_family
from nodegraph_diffusion.types import LoraPatch, ModelSource, TextEncoderHandle, UNetHandle, VaeHandle
from nodegraph_diffusion.vae_files import vae_file_source

CONFIGS_DIR = Path(__file__).parent / "configs"
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
# the text encoder classes a diffusers folder may name (CLIP's; T5's encoder for SD3 and Flux)
TEXT_ENCODER_CLASSES = ("CLIPText", "T5EncoderModel")


def refuse_pickle(path: Path, ctx: NodeContext, field: str = "path") -> None:
    """Raise InputError for pickled weights unless the run allows them (they can run arbitrary code)."""
    if path.suffix.lower() in PICKLE_SUFFIXES and not ctx.options.allow_pickle:
        raise InputError(
            f"refusing to load pickled weights '{path}' (pickle files can run code); convert them to "
            ".safetensors, or pass --allow-pickle if you trust the file",
            field=field,
        )


def read_state_dict(path: Path, ctx: NodeContext, field: str = "path",
                    prefixes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read a weights file into a CPU state dict (only the keys starting with one of `prefixes`, if
    given); corrupt or truncated files become InputError."""
    refuse_pickle(path, ctx, field)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        import torch

        try:
            with warnings.catch_warnings():  # torch's warnings would go to the terminal raw
                warnings.simplefilter("ignore")
                data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for bad files
            raise InputError(pickle_load_problem(path, exc), field=field) from exc
        state = dict(data.get("state_dict", data)) if isinstance(data, dict) else {}
        return {k: v for k, v in state.items() if prefixes is None or k.startswith(prefixes)}
    try:  # each tensor in its own fresh memory, not a view of the mapped file (see owned.py)
        return read_safetensors(path, None if prefixes is None else (lambda k: k.startswith(prefixes)))
    except Exception as exc:  # noqa: BLE001 - bad headers, short files, OS errors
        raise InputError(f"cannot read weights '{path}' (corrupt or truncated safetensors?): {exc}",
                         field=field) from exc


def read_shapes(path: Path, ctx: NodeContext, field: str = "path") -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a weights file, without loading the tensors when possible."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        state = read_state_dict(path, ctx, field)
        return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        size = path.stat().st_size
        with open(path, "rb") as raw:
            header_len = int.from_bytes(raw.read(8), "little")
            header = json.loads(raw.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end != size:
            raise ValueError(f"file is {size} bytes, header promises {8 + header_len + end}")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise InputError(f"cannot read weights '{path}' (corrupt or truncated safetensors?): {exc}",
                         field=field) from exc
    return shapes


def make_source(
    path: Path, ctx: NodeContext, tokenizer: Path | None = None, field: str = "path",
    vae_family: str = "auto", t5_tokenizer: Path | None = None,
) -> ModelSource:
    """Describe the weights at `path`: format, family, fingerprint and the config folder to read them.

    `vae_family`: the family a standalone VAE file is read as (`auto`: see vae_files.py)."""
    path = Path(path).resolve()
    tok = str(Path(tokenizer).resolve()) if tokenizer is not None else None
    t5_tok = str(Path(t5_tokenizer).resolve()) if t5_tokenizer is not None else None
    if path.is_dir():
        if (path / "model_index.json").is_file():
            index = json.loads((path / "model_index.json").read_text())
            family = folder_family(index)
            if family is None:
                known = ", ".join(f.label for f in available_families())
                raise InputError(f"'{path}' is a {index.get('_class_name', 'diffusers')} model, of no model "
                                 f"family this installation knows ({known})", field=field)
            wanted = (family.denoiser_component, "vae", *family.text_encoders)
            for component in wanted:  # say now, not when a sampler needs it
                missing = missing_component(path, component) if index.get(component, [None])[0] else None
                if missing:
                    raise InputError(missing, field=field)
            return ModelSource(str(path), fingerprint_path(path), "diffusers", "sd15", None, tok, family.name,
                               t5_tokenizer_dir=t5_tok)
        if (path / "config.json").is_file():
            # its own config.json has its scaling factor: of no family (vae_files.py)
            return ModelSource(str(path), fingerprint_path(path), "diffusers_component", "sd15", None, tok,
                               "")
        raise InputError(f"'{path}' is a folder but neither a diffusers model (model_index.json) nor a "
                         "model component (config.json)", field=field)
    shapes = read_shapes(path, ctx, field)
    found = file_family(shapes)
    if found is None:
        problem = next((p for p in (f.file_problem(shapes) for f in available_families()) if p), None)
        if problem:  # a denoiser of a known family, but no full model (e.g. transformer-only)
            raise InputError(f"'{path}' {problem}", field=field)
        vae = vae_file_source(path, fingerprint_path(path), shapes, CONFIGS_DIR, tok, vae_family, field)
        if vae is not None:
            return vae
        kind = detect_family(set(shapes), shapes)
        if kind == "sdxl":  # SDXL keys, but no UNet of base 1.0's or refiner 1.0's widths
            raise InputError(f"'{path}' has SDXL's text-encoder keys but not the UNet of SDXL base "
                             "1.0 or refiner 1.0 (the shipped configs); use its diffusers folder",
                             field=field)
        if kind != "unknown":
            raise InputError(f"'{path}' is an {kind.upper()} checkpoint; single files of it are not "
                             "supported yet (use its diffusers folder)", field=field)
        known = ", ".join(f.label for f in available_families())
        raise InputError(f"'{path}' is not a checkpoint of a supported family ({known})", field=field)
    family, config = found
    parts = single_file_parts(family, CONFIGS_DIR / config, path, shapes)
    return ModelSource(str(path), fingerprint_path(path), "single_file", config, str(CONFIGS_DIR / config),
                       tok, family.name, parts=parts, t5_tokenizer_dir=t5_tok)


def _single_file_kwargs(source: ModelSource, subfolder: str) -> dict[str, Any]:
    return {"config": source.config_dir, "subfolder": subfolder, "local_files_only": True}


def load_unet(source: ModelSource, ctx: NodeContext) -> Any:
    """Load the denoiser of a model source on CPU (the residency manager places it): the UNet, or the
    transformer of a flow-matching family (its `denoiser_class` from its `denoiser_component` folder)."""
    import diffusers

    path = Path(source.path)
    family = family_named(source.family or "sd1")
    cls = getattr(diffusers, family.denoiser_class)
    if source.format == "diffusers":
        return _from_pretrained(cls, path, family.denoiser_component, ctx)
    if source.format == "single_file":
        state = component_state(source, family.denoiser_component, ctx)
        try:
            model = cls.from_single_file(state, **_single_file_kwargs(source, family.denoiser_component))
        except (RuntimeError, ValueError, KeyError) as exc:  # diffusers' converters: shapes of no config
            raise InputError(f"cannot read the {family.label} denoiser of '{path}' ({source.base}): "
                             f"{exc}") from exc
        return own_storage(model.eval())
    if source.format == "transformer_file":  # flux1-dev.safetensors, fp8, GGUF (transformer_files.py)
        from nodegraph_diffusion.transformer_files import load_transformer_file

        return load_transformer_file(source, ctx)
    raise InputError(f"'{path}' holds no UNet", field="path")


def load_vae(source: ModelSource, ctx: NodeContext) -> Any:
    """Load the VAE of a model source (a full model, a vae folder, or a standalone VAE file)."""
    from diffusers import AutoencoderKL

    path = Path(source.path)
    if source.format == "diffusers":
        return _from_pretrained(AutoencoderKL, path, "vae", ctx)
    if source.format == "diffusers_component":
        return _from_pretrained(AutoencoderKL, path, None, ctx)
    if source.format in ("single_file", "single_file_vae"):
        state = component_state(source, "vae", ctx) if source.format == "single_file" else \
            read_state_dict(path, ctx)
        return own_storage(AutoencoderKL.from_single_file(state, **_single_file_kwargs(source, "vae")).eval())
    raise InputError(f"'{path}' holds no VAE", field="path")


def load_text_encoder(source: ModelSource, ctx: NodeContext, component: str = "text_encoder") -> Any:
    """Load a CLIP text encoder of a model source (`component`: its folder, e.g. SDXL's text_encoder_2).

    A diffusers folder names the encoder's class in model_index.json (SDXL's second encoder is a
    `CLIPTextModelWithProjection`, which also gives the pooled embeds); that class is used."""
    import transformers

    path = Path(source.path)
    if source.format == "diffusers":
        missing = missing_component(path, component)
        if missing:
            raise InputError(missing)
        if not _has_safetensors(path / component):
            refuse_pickle(weight_files(path / component)[0], ctx)
        index = json.loads((path / "model_index.json").read_text())
        named = (index.get(component) or [None, "CLIPTextModel"])[1]
        cls = getattr(transformers, str(named), None)
        if not (isinstance(cls, type) and str(named).startswith(TEXT_ENCODER_CLASSES)):
            raise InputError(f"'{path}': {component} is a {named}, not a CLIP or T5 text encoder")
        with _no_transformers_bar():
            model = cls.from_pretrained(path, subfolder=component, local_files_only=True)
        return own_storage(model.eval())
    if source.format in ("single_file", "component_files"):
        return file_text_encoder(source, component, ctx)
    raise InputError(f"'{path}' holds no text encoder", field="path")


@contextmanager
def _no_transformers_bar() -> Iterator[None]:
    """Hide transformers' own "Loading weights" bar: the run shows progress with its own bars."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _tokenizer_class(folder: Path, t5: bool) -> Any:
    """CLIP's tokenizer, or T5's for a family's T5 component or when the folder's tokenizer_config.json
    names a T5 tokenizer (SD3's tokenizer_3, Flux's tokenizer_2)."""
    from transformers import CLIPTokenizer, T5TokenizerFast

    config = folder / "tokenizer_config.json"
    named = str(json.loads(config.read_text()).get("tokenizer_class", "")) if config.is_file() else ""
    return T5TokenizerFast if t5 or named.startswith("T5") else CLIPTokenizer


def load_tokenizer(source: ModelSource, component: str = "tokenizer") -> Any:
    """Load the tokenizer: the handle's own folder (`t5_tokenizer` for T5), the model's, the shipped
    config's, or, for CLIP (single files carry none), CLIP's tokenizer built from the shipped merges."""
    t5_parts = family_named(source.family).t5_components if source.family else None
    if t5_parts and component == t5_parts[0]:
        return load_t5_tokenizer(source, component)
    folder = tokenizer_folder(source, component, source.tokenizer_dir)
    found = (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file()
    if not found and not source.tokenizer_dir and source.base in CLIP_TOKENIZER_PADS:
        from nodegraph_diffusion.clip_tokenizer import sd15_clip_tokenizer

        pads = CLIP_TOKENIZER_PADS[source.base]
        return sd15_clip_tokenizer(pad_token=pads.get(component, pads["tokenizer"]))
    if not found:
        where = (f"the tokenizer folder '{folder}' holds neither vocab.json nor tokenizer.json"
                 if source.tokenizer_dir
                 else f"no tokenizer for '{source.path}' ({source.base}; looked in '{folder}')")
        raise InputError(
            f"{where}; pass `tokenizer:` a folder holding vocab.json and merges.txt "
            "(e.g. the tokenizer/ folder of a diffusers model of the same family)",
            field="tokenizer",
        )
    return _tokenizer_class(folder, False).from_pretrained(folder)


def _has_safetensors(folder: Path) -> bool:
    return any(folder.glob("*.safetensors"))


def _from_pretrained(cls: Any, path: Path, subfolder: str | None, ctx: NodeContext) -> Any:
    folder = path / subfolder if subfolder else path
    missing = missing_component(path, subfolder)  # not a made-up file name: what is missing, and where
    if missing:  # no field: this runs in the node using the model, which has no 'path' input
        raise InputError(missing)
    safe = _has_safetensors(folder)
    if not safe:
        refuse_pickle(weight_files(folder)[0], ctx)
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": safe}
    if subfolder:
        kwargs["subfolder"] = subfolder
    try:
        diffusers_model = safe and cls.__module__.startswith("diffusers")  # plain case: no second copy
        owned = diffusers_from_folder(cls, path, subfolder) if diffusers_model else None
        return owned if owned is not None else own_storage(cls.from_pretrained(path, **kwargs).eval())
    except OSError as exc:
        raise InputError(f"cannot load {subfolder or 'model'} from '{path}': {exc}", field="path") from exc


def component_key(source: ModelSource, component: str) -> str:
    """The residency key: same weights, same component -> one copy per process."""
    extra = ""
    if component == "tokenizer" and source.tokenizer_dir:
        extra = f":{fingerprint_path(Path(source.tokenizer_dir))}"
    if source.format == "single_file_vae":  # one VAE file read with SD1.x's or SDXL's config: two models
        extra = f":{source.base}"
    if source.format == "component_files":  # each encoder its own file: a new T5 keeps the CLIPs
        return component_files_key(source, component)
    return f"{source.fingerprint}:{component}{extra}"


def _apply_loras(model: Any, loras: tuple[LoraPatch, ...], part: str, source: ModelSource,
                 ctx: NodeContext) -> None:
    """Make exactly `loras` active on `model` at their weights for `part` (a component name), read
    the way the source's family reads LoRA files."""
    from nodegraph_diffusion.lora import activate_loras

    activate_loras(model, loras, part, family_named(source.family), ctx)


@contextmanager
def use_unet(ctx: NodeContext, handle: UNetHandle) -> Iterator[Any]:
    """The handle's UNet (or transformer) on the run's device and dtype, with its LoRAs active, pinned
    for the block; streamed in groups of blocks when it does not fit the VRAM budget (the residency
    manager decides; compute on `group_offload.run_device(model)`, not where its weights are)."""
    from nodegraph_diffusion.group_offload import GroupOffload
    from nodegraph_diffusion.optimize import prepare_unet
    from nodegraph_diffusion.transformer_files import adapters_at_compute, residency

    source = handle.source
    key, dtype = residency(source, ctx, component_key(source, "unet"))  # fp8/GGUF: placed, never cast
    label = family_named(source.family).denoiser_component if source.family else "unet"
    # past its VRAM budget the manager streams it in groups of blocks (group_offload.py)
    with ctx.resources.use(key, lambda: load_unet(source, ctx), device=ctx.device, dtype=dtype,
                           label=label, streaming=GroupOffload()) as unet:
        with adapters_at_compute(unet, source, tuple(lora.name for lora in handle.loras)):  # fp8 storage
            _apply_loras(unet, handle.loras, "unet", source, ctx)
        yield prepare_unet(ctx, key, unet)  # the run's speed options (--optimize), set on every use


@contextmanager
def use_text_encoder(ctx: NodeContext, handle: TextEncoderHandle, component: str = "text_encoder",
                     tokenizer_component: str = "tokenizer") -> Iterator[tuple[Any, Any]]:
    """(tokenizer, text encoder) of the handle, LoRAs active, pinned for the block.

    `component`/`tokenizer_component` pick one encoder of a family with several (SDXL's
    text_encoder_2 and tokenizer_2); LoRAs apply to each encoder the family lists in
    `lora_components`."""
    source = handle.source
    with ctx.resources.use(component_key(source, tokenizer_component),
                           lambda: load_tokenizer(source, tokenizer_component)) as tokenizer, \
            ctx.resources.use(component_key(source, component),
                              lambda: load_text_encoder(source, ctx, component),
                              device=ctx.device, dtype=ctx.dtype, label=component) as encoder:
        if component in family_named(source.family).lora_components:
            _apply_loras(encoder, handle.loras, component, source, ctx)
        if handle.embeddings:
            from nodegraph_diffusion.embeddings import SDXL_PARTS, applied

            part = SDXL_PARTS.get(component) if source.family == "sdxl" else None
            with applied(ctx, tokenizer, encoder, handle.embeddings, part) as own_tokenizer:
                yield own_tokenizer, encoder
        else:
            yield tokenizer, encoder


@contextmanager
def use_tokenizer(ctx: NodeContext, handle: TextEncoderHandle) -> Iterator[Any]:
    """The tokenizer of the handle's family's main encoder (SD1.x: `tokenizer`; SDXL, whose refiner has
    only the second: `tokenizer_2`, the same CLIP BPE), without loading any text encoder."""
    source = handle.source
    component = family_named(source.family).tokenizers[0]
    key = component_key(source, component)
    with ctx.resources.use(key, lambda: load_tokenizer(source, component)) as tok:
        yield tok


@contextmanager
def use_vae(ctx: NodeContext, handle: VaeHandle) -> Iterator[Any]:
    """The handle's VAE on the run's device and dtype, pinned for the block."""
    from nodegraph_diffusion.optimize import prepare_vae

    source = handle.source
    key = component_key(source, "vae")
    with ctx.resources.use(key, lambda: load_vae(source, ctx), device=ctx.device, dtype=ctx.dtype,
                           label="vae") as vae:
        yield prepare_vae(ctx, key, vae)


def scheduler_config(source: ModelSource) -> dict[str, Any]:
    """The model's scheduler_config.json (its own for diffusers folders, the shipped one otherwise)."""
    own = source.format == "diffusers"
    folder = Path(source.path) if own else Path(source.config_dir or CONFIGS_DIR / "sd15")
    file = folder / "scheduler" / "scheduler_config.json"
    if not file.is_file():
        file = CONFIGS_DIR / "sd15" / "scheduler" / "scheduler_config.json"
    return dict(json.loads(file.read_text()))
