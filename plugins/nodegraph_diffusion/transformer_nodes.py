"""`diffusion.load_transformer`: a model's denoiser replaced by a transformer-only file.

ComfyUI users keep Flux.1 as a transformer file (`flux1-dev.safetensors`, `flux1-dev-fp8.safetensors`,
`flux1-dev-Q8_0.gguf`) next to separate text encoders and VAE; here the text encoders, VAE and scheduler
come from a model loaded with `diffusion.load_model` and only its UNetHandle is replaced. The output is
a light handle like the loader's (the weights load when a sampler uses it, through the residency
manager), so `diffusion.load_lora` and ControlNets attach to it as to any UNetHandle. Reading the
files: transformer_files.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from nodegraph.api import Fact, FactError, FactsRequest, InputError, NodeContext, node
from nodegraph_diffusion.families import available_families, family_named
from nodegraph_diffusion.family_facts import Facts, header_shapes, label, passthrough
from nodegraph_diffusion.flux_bfl import COMFY_PREFIX
from nodegraph_diffusion.loading import CONFIGS_DIR, PICKLE_SUFFIXES
from nodegraph_diffusion.paths import DiffusionModelRef, ModelRef, resolve_in, resolve_model_ref
from nodegraph_diffusion.transformer_files import (
    FORMAT,
    GGUF,
    check_fits,
    read_header,
    transformer_source,
)
from nodegraph_diffusion.types import UNetHandle

ComputeDtype = Literal["auto", "float32", "bfloat16", "float16"]


def transformer_facts(req: FactsRequest) -> Facts:
    """Of the family of the UNet it replaces; a .safetensors file whose header names another family's
    transformer is refused here, before any weights load (the node checks every file when it runs)."""
    unet_fact = req.upstream.get("unet")
    family = unet_fact.facts.get("family") if isinstance(unet_fact, Fact) else None
    file = _safetensors_at(req.literals.get("path"), req.base_dir)
    if family is not None and file is not None:
        try:
            keys = [k.removeprefix(COMFY_PREFIX) for k in header_shapes(file)]
        except (OSError, ValueError, MemoryError):  # a bad header: the node says what is wrong with it
            keys = []
        owner = next((f for f in available_families() if f.recognise_denoiser_keys(keys)), None)
        if owner is not None and owner.name != family:
            raise FactError(f"'path' names '{file.name}', a transformer file for {owner.label} models, but "
                            f"'unet' comes from {label(family)} (node '{unet_fact.node}')", field="path")
    return passthrough(req, {"out": "unet"})


def _safetensors_at(ref: object, base_dir: Path) -> Path | None:
    """The .safetensors file a `path` literal names, if it is found without the model dirs."""
    if not isinstance(ref, str) or not ref.lower().endswith(".safetensors"):
        return None
    try:
        path = resolve_in(ref, base_dir, kind="diffusion_model")
    except InputError:
        return None
    return path if path.is_file() else None


def _config_root(ctx: NodeContext, config: str | None, unet: UNetHandle) -> Path:
    """The folder whose denoiser config reads the file: `config` (a shipped config name, a diffusers
    model folder or its transformer folder), else the folder `unet`'s own model was read with."""
    if config is not None:
        shipped = CONFIGS_DIR / config
        if "/" not in config and "\\" not in config and shipped.is_dir():
            return shipped
        try:
            return resolve_model_ref(config, ctx, "checkpoint")
        except InputError as exc:  # said of `config`, not of the file
            shipped = ", ".join(sorted(p.name for p in CONFIGS_DIR.iterdir() if p.is_dir()))
            raise InputError(f"{exc} (nor is it a shipped config: {shipped})", field="config") from exc
    source = unet.source
    if source.format == "diffusers":
        return Path(source.path)
    if source.config_dir and source.format in ("single_file", FORMAT):
        return Path(source.config_dir)
    raise InputError(f"cannot tell the transformer config of '{source.path}': set `config`", field="config")


@node("diffusion.load_transformer", version="1.0.0", facts=transformer_facts)
def load_transformer(
    ctx: NodeContext,
    path: Annotated[DiffusionModelRef, Field(description=(
        "A transformer-only file: .safetensors in BFL/ComfyUI layout (flux1-dev.safetensors) or diffusers "
        "layout, fp8 (e4m3fn) weights too, or a GGUF (flux1-dev-Q8_0.gguf)"))],
    unet: Annotated[UNetHandle, Field(description="The model's UNet handle (diffusion.load_model) whose "
                                                  "transformer the file replaces")],
    config: Annotated[ModelRef | None, Field(description=(
        "The transformer's config: a shipped config name (configs/NAME), a diffusers model folder or its "
        "transformer folder; default: unet's own model"))] = None,
    dtype: Annotated[ComputeDtype, Field(description=(
        "What fp8/GGUF weights compute in (auto: the run's dtype); plain weights follow the run's "
        "dtype"))] = "auto",
) -> UNetHandle:
    """Replace a model's transformer by a transformer-only file (BFL/ComfyUI, diffusers; fp8; GGUF)."""
    family = family_named(unet.source.family)
    if family.denoiser_component != "transformer":
        raise InputError(f"'unet' is an {family.label} UNet: transformer files replace the transformer of "
                         "a flow-matching model (Flux.1, SD3)", field="unet")
    file = resolve_model_ref(path, ctx, "diffusion_model")
    if file.suffix.lower() in PICKLE_SUFFIXES:  # never read: even --allow-pickle does not make it one
        raise InputError(f"refusing to load pickled weights '{file}' (pickle files can run code): "
                         "transformer files are read as .safetensors or .gguf; convert it to .safetensors",
                         field="path")
    if file.is_dir():
        raise InputError(f"'{file}' is a folder: give the transformer file itself (.safetensors, .gguf); a "
                         "diffusers folder loads with diffusion.load_model", field="path")
    header = read_header(file)
    root = _config_root(ctx, None if config is None else str(config), unet)
    check_fits(file, header, family, root)
    compute = dtype if header.storage else "auto"  # plain weights follow the run's dtype
    ctx.note(_storage_note(file, header.storage, header.kinds, compute))
    return UNetHandle(transformer_source(file, header, family, root, unet.source.base, compute), unet.loras)


def _storage_note(file: Path, storage: str, kinds: tuple[str, ...], compute: str) -> str:
    """What the run report says of the file: how its weights are held and what they compute in."""
    at = "the run's dtype" if compute == "auto" else compute
    if storage == GGUF:
        return f"transformer from {file.name}: GGUF ({', '.join(kinds)}), dequantized per layer to {at}"
    if storage:
        return f"transformer from {file.name}: {storage} weights kept, upcast per layer to {at}"
    return f"transformer from {file.name}: {', '.join(kinds)} weights, computing in {at}"
