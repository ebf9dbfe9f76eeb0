"""Where model files are: `builtin:NAME`, paths relative to the graph file, and named models in search dirs.

A reference is one of
- `builtin:NAME` — a model shipped inside this package (`nodegraph_diffusion/builtin/NAME`; other packs'
  helpers add e.g. `builtin/tinyworld-pose` there);
- a path (absolute, or relative to the graph file, then to each search dir);
- a bare name (`dreamshaper.safetensors`, `my-lora`) searched in the run's `model_dirs`, then in the
  folders listed in `NODEGRAPH_MODELS` (os.pathsep-separated), each with its ComfyUI-style
  `models/<kind folder>` and `<kind folder>` subfolders.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from nodegraph.api import InputError, NodeContext, fingerprint_file

BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = Path(__file__).parent / "builtin"
ENV_VAR = "NODEGRAPH_MODELS"
EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")

# kind -> sub-folders searched inside each search dir (ComfyUI layout first).
KIND_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoint": ("checkpoints", "diffusers", "Stable-diffusion"),
    "diffusion_model": ("diffusion_models", "unet"),  # ComfyUI's folders of transformer-only files
    "lora": ("loras", "Lora"),
    "controlnet": ("controlnet", "ControlNet"),
    "vae": ("vae", "VAE"),
    "embedding": ("embeddings",),
    "adapter": ("t2i_adapter", "adapters", "ipadapter"),
    "tokenizer": ("tokenizers", "clip"),
    "text_encoder": ("text_encoders", "clip"),
    "upscale_model": ("upscale_models", "ESRGAN", "RealESRGAN"),
}


def fingerprint_path(path: Path) -> str:
    """Content fingerprint of a file, or of a folder as the hash of its files' names and fingerprints."""
    if not path.is_dir():
        return fingerprint_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(child.relative_to(path)).encode())
        digest.update(fingerprint_file(child).encode())
    return digest.hexdigest()


def search_dirs(model_dirs: Iterable[Path] = (), kind: str | None = None) -> list[Path]:
    """The run's model dirs, then those in NODEGRAPH_MODELS, in order, without duplicates; with a
    `kind`, then the folders of that kind an `extra_model_paths.yaml` (ComfyUI's) in them lists."""
    from nodegraph_diffusion.extra_paths import extra_folders

    env = [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    seen: list[Path] = []
    for d in [*(Path(p).expanduser() for p in model_dirs), *env]:
        if d not in seen:
            seen.append(d)
    if kind is not None:
        seen += [f for f in extra_folders(list(seen), kind) if f not in seen]
    return seen


def _names(ref: str) -> list[str]:
    """The name as given, then with each weights extension if it has none."""
    if Path(ref).suffix.lower() in EXTENSIONS:
        return [ref]
    return [ref] + [ref + ext for ext in EXTENSIONS]


def candidates(ref: str, base_dir: Path, model_dirs: Iterable[Path], kind: str) -> list[Path]:
    """Every place `ref` may be, in lookup order (the error message lists them)."""
    if ref.startswith(BUILTIN_PREFIX):
        return [BUILTIN_DIR / ref[len(BUILTIN_PREFIX):]]
    path = Path(ref).expanduser()
    if path.is_absolute():
        return [path]
    found = [base_dir / ref]
    for d in search_dirs(model_dirs, kind):
        for name in _names(ref):
            found.append(d / name)
            for sub in KIND_FOLDERS.get(kind, ()):
                found.append(d / "models" / sub / name)
                found.append(d / sub / name)
    return found


def resolve_in(ref: str, base_dir: Path, model_dirs: Iterable[Path] = (), kind: str = "checkpoint") -> Path:
    """Resolve a model reference without a node context; raises InputError listing the places searched."""
    if not ref or not ref.strip():
        raise InputError("empty model reference", field="path")
    if ref.startswith(BUILTIN_PREFIX):
        target = BUILTIN_DIR / ref[len(BUILTIN_PREFIX):]
        if not target.exists() or not ref[len(BUILTIN_PREFIX):]:
            known = sorted(p.name for p in BUILTIN_DIR.iterdir()) if BUILTIN_DIR.is_dir() else []
            raise InputError(f"no built-in model '{ref}'; built-ins: {', '.join(known) or 'none'}",
                             field="path")
        return target
    places = candidates(ref, base_dir, model_dirs, kind)
    for place in places:
        if place.exists():
            return place
    raise InputError(_not_found(ref, base_dir, search_dirs(model_dirs, kind), kind), field="path")


def _not_found(ref: str, base_dir: Path, dirs: list[Path], kind: str) -> str:
    """Every place really searched (absolute, missing folders marked), the names tried, the real flag."""
    if Path(ref).expanduser().is_absolute():
        return f"{kind} '{ref}' not found: there is no such file or folder"
    lines = [f"{os.path.abspath(base_dir / ref)}  (beside the graph)"]
    if dirs:
        subs = KIND_FOLDERS.get(kind, ())
        within = f" and its sub-folders {', '.join(f'models/{s}, {s}' for s in subs)}" if subs else ""
        lines.append(f"{', '.join(_names(ref))} in each model folder{within}:")
        lines += [f"  {os.path.abspath(d)}" + ("" if d.is_dir() else "  (does not exist)") for d in dirs]
        how = (f"model folders come from --models DIR (repeatable), {ENV_VAR} and the "
               "extra_model_paths.yaml in them")
    else:
        how = f"no model folders given: pass --models DIR (repeatable) or set {ENV_VAR}"
    shown = "\n  ".join(lines)
    return f"{kind} '{ref}' not found ({how}); searched:\n  {shown}"


def resolve_model_ref(ref: str, ctx: NodeContext, kind: str = "checkpoint") -> Path:
    """Resolve a model reference for a node: graph-relative paths, builtins, then the search dirs."""
    return resolve_in(str(ref), ctx.input_path("."), ctx.options.model_dirs, kind)


class ModelRef(str):
    """A model reference literal (`builtin:NAME`, a path, or a name in the model dirs).

    Where it resolves and its content fingerprint join the cache key: replacing the weights re-runs
    the loader, and so does a moved or deleted checkout. Loaders put absolute paths into their
    handles, and a disk-cached handle naming a folder that has gone would fail the next run far from
    the cause. Loaders also put the content fingerprint into their handles: residency keys on it.
    """

    kind = "checkpoint"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema(min_length=1))

    @classmethod
    def __nodegraph_fingerprint__(cls, value: str, base_dir: Path, search_dirs: tuple[Path, ...] = ()) -> str:
        try:
            found = resolve_in(str(value), base_dir, search_dirs, cls.kind)
        except InputError:
            return "unresolved"  # the node reports it with the places searched
        return f"{found.resolve()}|{fingerprint_path(found)}"


class LoraRef(ModelRef):
    """A LoRA file reference (searched in `loras` folders)."""

    kind = "lora"


class EmbeddingRef(ModelRef):
    """A textual-inversion embedding file (searched in `embeddings` folders)."""

    kind = "embedding"


class VaeRef(ModelRef):
    """A VAE reference (searched in `vae` folders)."""

    kind = "vae"


class TextEncoderRef(ModelRef):
    """A text-encoder file (CLIP-L, CLIP-G, T5-XXL; searched in `text_encoders` and `clip` folders)."""

    kind = "text_encoder"


class TokenizerRef(ModelRef):
    """A tokenizer folder (vocab.json + merges.txt), for single-file checkpoints that do not carry one."""

    kind = "tokenizer"


class DiffusionModelRef(ModelRef):
    """A denoiser-only file (flux1-dev.safetensors, a GGUF; searched in `diffusion_models`, `unet`)."""

    kind = "diffusion_model"
