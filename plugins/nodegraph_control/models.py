"""Handles and offline loading of control models (ControlNet, T2I-Adapter).

Models flow through graphs as light handles (path, content fingerprint, format); the weights are read
only when a sampler activates a unit, through the run's residency manager (key = fingerprint + kind),
so two units or two graphs naming the same file share one copy.

Formats:
- a diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`);
- a single `.safetensors` file in diffusers layout, with its `config.json` beside it (`NAME.json` or
  `config.json` in the same folder) or given as `config`;
- ControlNet only: an original-layout single file (`control_model.*` keys, as A1111/ComfyUI use),
  converted by diffusers' `from_single_file` with a *local* config (default: the SD1.5 ControlNet
  config shipped in `configs/controlnet-sd15`), never reaching for the Hub.
Pickled weights (.ckpt/.pt/.pth/.bin) are refused unless the run allows pickle; then they are read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodegraph_diffusion.loading import (
    PICKLE_SUFFIXES,
    own_storage,
    read_shapes,
    read_state_dict,
    refuse_pickle,
)
from nodegraph_diffusion.owned import diffusers_from_folder
from nodegraph_diffusion.paths import ModelRef, fingerprint_path

from nodegraph.api import InputError, NodeContext

CONFIGS_DIR = Path(__file__).parent / "configs"
WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
KINDS = {"controlnet": "ControlNet", "t2i_adapter": "T2I-Adapter"}
CLASSES = {"controlnet": ("ControlNetModel", "FluxControlNetModel", "SD3ControlNetModel"),
           "t2i_adapter": ("T2IAdapter",)}


class ControlNetRef(ModelRef):
    """A ControlNet reference (`builtin:NAME`, a folder or file; searched in `controlnet` folders)."""

    kind = "controlnet"


class AdapterRef(ModelRef):
    """A T2I-Adapter reference (searched in `t2i_adapter` / `adapters` folders)."""

    kind = "adapter"


@dataclass(frozen=True)
class ControlModelHandle:
    """Where a control model's weights are; hashable, cheap, the residency key is its fingerprint."""

    __nodegraph_resident__ = True  # a model handle: the engine's order groups the nodes using one

    path: str
    fingerprint: str
    format: str  # "diffusers" | "single_file" (diffusers layout) | "original" (ControlNet single file)
    config_dir: str | None = None  # folder with config.json for single files


@dataclass(frozen=True)
class ControlNetHandle(ControlModelHandle):
    """A ControlNet model: a UNet one (`ControlNetModel`) or a transformer one (`FluxControlNetModel`,
    `SD3ControlNetModel`), as its config.json names it; what its config tells the unit node before any
    weights load: its class, its union modes and whether it reads the control image VAE-encoded."""

    model_class: str = "ControlNetModel"
    modes: int | None = None  # a union ControlNet's number of control modes (config `num_mode`)
    latent_image: bool = False  # the control image is VAE-encoded (InstantX Flux, SD3) rather than pixels


@dataclass(frozen=True)
class AdapterHandle(ControlModelHandle):
    """A T2I-Adapter model (`diffusers.T2IAdapter`)."""


def describe(path: Path, ctx: NodeContext, kind: str, config: Path | None = None) -> dict[str, Any]:
    """Inspect weights at `path` (without loading the tensors): format, fingerprint, config folder."""
    label = KINDS[kind]
    path = Path(path).resolve()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(
                f"'{path}' is a folder without config.json; expected a diffusers {label} folder", field="path"
            )
        weights = [p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES]
        if not weights:
            raise InputError(
                f"'{path}' holds no weights file (diffusion_pytorch_model.safetensors)", field="path"
            )
        if not any(p.suffix == ".safetensors" for p in weights):
            refuse_pickle(weights[0], ctx)
        return {"path": str(path), "fingerprint": fingerprint_path(path), "format": "diffusers",
                **_check_class(path / "config.json", kind)}
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise InputError(
            f"'{path}' is not a weights file ({', '.join(WEIGHT_SUFFIXES)}) or a diffusers folder",
            field="path",
        )
    refuse_pickle(path, ctx)
    keys = set(read_shapes(path, ctx))
    original = any(k.startswith(("control_model.", "input_hint_block.")) for k in keys)
    if original and kind != "controlnet":
        raise InputError(f"'{path}' is an original-layout ControlNet file, not a {label}", field="path")
    if original:
        folder = Path(config) if config else CONFIGS_DIR / "controlnet-sd15"
        fmt = "original"
    else:
        folder = Path(config) if config else _config_beside(path)
        if folder is None:
            raise InputError(
                f"'{path}' is a single {label} file in diffusers layout without a config: put "
                f"'{path.stem}.json' or 'config.json' beside it, or pass `config`",
                field="config",
            )
        fmt = "single_file"
    if folder.is_file():
        folder = _as_config_folder(folder)
    if not (folder / "config.json").is_file():
        raise InputError(f"config folder '{folder}' has no config.json", field="config")
    return {
        "path": str(path),
        "fingerprint": fingerprint_path(path),
        "format": fmt,
        "config_dir": str(folder),
        **_check_class(folder / "config.json", kind),
    }


def _config_beside(path: Path) -> Path | None:
    for candidate in (path.with_suffix(".json"), path.parent / "config.json"):
        if candidate.is_file():
            return candidate
    return None


def _as_config_folder(file: Path) -> Path:
    """`NAME.json` beside a weights file -> a folder diffusers can read as `config=` (config.json)."""
    if file.name == "config.json":
        return file.parent
    import hashlib
    import tempfile

    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"nodegraph-config-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_bytes(file.read_bytes())
    return folder


def _check_class(config_file: Path, kind: str) -> dict[str, Any]:
    """Refuse a config of another model class; a ControlNet's class, union modes and control input."""
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read config '{config_file}': {exc}", field="path") from exc
    expected = CLASSES[kind]
    found = config.get("_class_name")
    if found is not None and found not in expected:
        raise InputError(
            f"'{config_file}' describes a {found}, not a {KINDS[kind]} ({', '.join(expected)})", field="path"
        )
    if kind != "controlnet" or found in (None, "ControlNetModel"):
        return {}
    # InstantX-style Flux ControlNets and SD3's read VAE latents; XLabs' a pixel hint block
    latent = found == "SD3ControlNetModel" or config.get("conditioning_embedding_channels") is None
    return {"model_class": found, "modes": config.get("num_mode"), "latent_image": latent}


def _model_class(kind: str, handle: ControlModelHandle) -> Any:
    import diffusers

    if kind != "controlnet":
        return diffusers.T2IAdapter
    return getattr(diffusers, getattr(handle, "model_class", "ControlNetModel"))


def load_control_model(handle: ControlModelHandle, ctx: NodeContext | None, kind: str) -> Any:
    """Read a control model on the CPU in eval mode, with its weights in fresh memory (`own_storage`)."""
    cls = _model_class(kind, handle)
    path = Path(handle.path)
    allow_pickle = bool(ctx is not None and ctx.options.allow_pickle)
    try:
        if handle.format == "diffusers":
            safe = any(path.glob("*.safetensors"))
            # the plain case reads the weights straight into owned memory (no second copy, owned.py)
            model = diffusers_from_folder(cls, path, None) if safe else None
            if model is None:
                model = cls.from_pretrained(path, local_files_only=True, use_safetensors=safe)
        elif handle.format == "single_file":
            state = _state(path, ctx, allow_pickle)
            model = cls.from_config(cls.load_config(handle.config_dir))
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise InputError(
                    f"'{path}' does not fit its config: {len(missing)} missing keys (e.g. {missing[:2]}), "
                    f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})",
                    field="path",
                )
        else:
            state = _state(path, ctx, allow_pickle)
            model = cls.from_single_file(state, config=handle.config_dir, local_files_only=True)
    except InputError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise InputError(f"cannot load {KINDS[kind]} from '{path}': {exc}", field="path") from exc
    return own_storage(model.eval())


def _state(path: Path, ctx: NodeContext | None, allow_pickle: bool) -> dict[str, Any]:
    if ctx is not None:
        return read_state_dict(path, ctx)
    if path.suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
        raise InputError(f"refusing to load pickled weights '{path}'", field="path")
    from safetensors.torch import load_file

    return load_file(str(path))


def check_family(unet: Any, model: Any, handle: ControlModelHandle, kind: str) -> None:
    """Refuse a control model made for another model family than the sampler's UNet (both told by their
    configs), before any step: it would fail mid-run with a shape error. `nodegraph validate` already
    says so for graphs whose files it can read (family_facts); this covers library use and the rest."""
    from nodegraph_diffusion.families import config_family

    theirs, ours = config_family(dict(model.config)), config_family(dict(unet.config))
    if theirs is not None and ours is not None and theirs.name != ours.name:
        raise InputError(
            f"{KINDS[kind]} '{handle.path}' is made for {theirs.label} models, but the sampler's UNet is "
            f"{ours.label}: use a {KINDS[kind]} made for {ours.label}",
            field="conditions",
        )


@contextmanager
def use_control_model(
    ctx: NodeContext | None, handle: ControlModelHandle, kind: str, device: Any, dtype: Any
) -> Iterator[Any]:
    """The model on `device`/`dtype`, loaded once per run context (residency), pinned for the block.

    Without a context (library use of the sampling loop) the model is simply loaded.
    """
    if ctx is None:
        model = load_control_model(handle, None, kind)
        param = next(model.parameters())
        yield (
            model if (param.device, param.dtype) == (device, dtype) else model.to(device=device, dtype=dtype)
        )
        return
    key = f"{handle.fingerprint}:{kind}"
    with ctx.resources.use(
        key, lambda: load_control_model(handle, ctx, kind), device=device, dtype=dtype
    ) as m:
        yield m
