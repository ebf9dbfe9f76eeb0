"""IP-Adapter files: find and check the adapter and its CLIP image encoder; read them, offline.

Layout (what `pipe.load_ip_adapter` reads, as h94/IP-Adapter ships it):
- the adapter: one `.safetensors` file with `image_proj.*` (the image projection) and `ip_adapter.*`
  (`{id}.to_k_ip.weight` / `{id}.to_v_ip.weight` per cross-attention layer) keys; or the original pickled
  `.bin` (a dict `{"image_proj": {...}, "ip_adapter": {...}}`), read only with `--allow-pickle`;
- the image encoder: a `CLIPVisionModelWithProjection` folder (`config.json` + weights), by default the
  `image_encoder/` folder beside the adapter file or one level up (h94's `models/image_encoder`); or a
  whole `CLIPModel` folder -- the one `clip.load` names for ranking -- whose vision tower and visual
  projection are that same encoder (h94's SD1.5 encoder *is* laion/CLIP-ViT-H-14-laion2B-s32B-b79K's
  vision half), so one CLIP folder serves both; its text half is not loaded.
A reference may also name a folder holding exactly one adapter file (the built-in
`builtin:tinyworld-ip-adapter` is such a folder, with its `image_encoder/`).

Everything is checked when the loader node runs (key layout, FaceID variants that need face embeddings,
encoder class, projection widths), so a bad file fails at the node that names it, naming the path.
Weights are read when a sampler or the encode node needs them, through the residency manager (keys =
content fingerprints), so two graphs naming the same files share one copy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
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
from nodegraph_diffusion.paths import ModelRef, fingerprint_path

from nodegraph.api import InputError, NodeContext

ADAPTER_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
ENCODER_CLASSES = ("CLIPVisionModelWithProjection", "CLIPModel")
PARTS = ("image_proj", "ip_adapter")


class IPAdapterRef(ModelRef):
    """An IP-Adapter reference (`builtin:NAME`, a file or a folder holding one; searched in `ipadapter`)."""

    kind = "adapter"


@dataclass(frozen=True)
class IPAdapterHandle:
    """Where an IP-Adapter and its image encoder are; hashable and cheap (weights load on use)."""

    __nodegraph_resident__ = True  # a model handle: the engine's order groups the nodes using one

    path: str  # the adapter weights file
    fingerprint: str
    encoder_path: str  # CLIPVisionModelWithProjection folder
    encoder_fingerprint: str
    hidden_states: bool  # the projection reads the encoder's penultimate hidden states (Plus / Full)


def adapter_file(path: Path) -> Path:
    """The adapter weights file a reference names (a file, or a folder holding exactly one)."""
    if not path.is_dir():
        if path.suffix.lower() not in ADAPTER_SUFFIXES:
            raise InputError(
                f"'{path}' is not an IP-Adapter weights file ({', '.join(ADAPTER_SUFFIXES)})", field="path"
            )
        return path
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in ADAPTER_SUFFIXES)
    if len(files) != 1:
        raise InputError(
            f"IP-Adapter folder '{path}' must hold exactly one weights file "
            f"({', '.join(ADAPTER_SUFFIXES)}), found {len(files)}",
            field="path",
        )
    return files[0]


def find_encoder(adapter: Path, given: Path | None) -> Path:
    """The image encoder folder: `given`, else `image_encoder/` beside the adapter file or one level up."""
    places = (
        [given]
        if given is not None
        else [adapter.parent / "image_encoder", adapter.parent.parent / "image_encoder"]
    )
    for place in places:
        if place.is_dir() and (place / "config.json").is_file():
            return place
    shown = ", ".join(f"'{p}'" for p in places)
    raise InputError(
        f"no CLIP image encoder for IP-Adapter '{adapter}': expected a "
        f"CLIPVisionModelWithProjection folder (config.json + weights) at {shown}; "
        "pass `image_encoder`",
        field="image_encoder",
    )


def split_state(state: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """Flat (`image_proj.x`) or nested (`{"image_proj": {...}}`) weights -> nested (what diffusers takes)."""
    if all(isinstance(state.get(part), dict) for part in PARTS):
        return {part: dict(state[part]) for part in PARTS}
    nested: dict[str, dict[str, Any]] = {part: {} for part in PARTS}
    for key, value in state.items():
        part, _, rest = key.partition(".")
        if part in nested and rest:
            nested[part][rest] = value
    if not nested["image_proj"] or not nested["ip_adapter"]:
        sample = ", ".join(sorted(state)[:3]) or "none"
        raise InputError(
            f"'{path}' is not an IP-Adapter file: expected `image_proj.*` and `ip_adapter.*` "
            f"keys (diffusers/original IP-Adapter layout), found e.g. {sample}",
            field="path",
        )
    return nested


def _shapes(path: Path, ctx: NodeContext) -> dict[str, dict[str, tuple[int, ...]]]:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        nested = split_state(read_state_dict(path, ctx), path)
        return {part: {k: tuple(v.shape) for k, v in values.items()} for part, values in nested.items()}
    return split_state(dict(read_shapes(path, ctx)), path)


def _encoder_config(folder: Path, ctx: NodeContext) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(
            f"cannot read image encoder config '{folder / 'config.json'}': {exc}", field="image_encoder"
        ) from exc
    classes = config.get("architectures") or []
    if classes and not set(classes) & set(ENCODER_CLASSES):
        raise InputError(
            f"image encoder '{folder}' is a {classes[0]}, not a CLIPVisionModelWithProjection "
            "(or a CLIPModel)",
            field="image_encoder",
        )
    weights = [p for p in folder.iterdir() if p.suffix in (".safetensors", *PICKLE_SUFFIXES)]
    if not weights:
        raise InputError(
            f"image encoder folder '{folder}' holds no weights (model.safetensors)", field="image_encoder"
        )
    if not any(p.suffix == ".safetensors" for p in weights):
        refuse_pickle(weights[0], ctx, field="image_encoder")
    return vision_part(dict(config))


def vision_part(config: dict[str, Any]) -> dict[str, Any]:
    """The vision tower's config of a CLIPModel config (with the model's projection width, which
    CLIPConfig keeps at the top level); any other config as it is."""
    if config.get("model_type") != "clip":
        return config
    vision = dict(config.get("vision_config") or {})
    vision["projection_dim"] = config.get("projection_dim", vision.get("projection_dim"))
    return vision


def describe_ip_adapter(path: Path, encoder: Path | None, ctx: NodeContext) -> IPAdapterHandle:
    """Check an IP-Adapter and its encoder without loading the weights; return their handle."""
    file = adapter_file(Path(path).resolve())
    refuse_pickle(file, ctx)
    shapes = _shapes(file, ctx)
    proj = shapes["image_proj"]
    if "perceiver_resampler.proj_in.weight" in proj or (
        "norm.weight" in proj and "proj.weight" not in proj and "proj.3.weight" not in proj
    ):
        raise InputError(
            f"'{file}' is an IP-Adapter FaceID model, which needs face embeddings "
            "(insightface); only image-prompt IP-Adapters are supported",
            field="path",
        )
    folder = find_encoder(file, Path(encoder).resolve() if encoder is not None else None)
    config = _encoder_config(folder, ctx)
    hidden_states = "proj.weight" not in proj  # Plus / Full read the penultimate hidden states
    width = config.get("hidden_size") if hidden_states else config.get("projection_dim")
    wanted = proj.get("proj.weight", proj.get("proj_in.weight", proj.get("proj.0.weight")))
    if wanted is not None and width is not None and wanted[-1] != width:
        what = "hidden_size" if hidden_states else "projection_dim"
        raise InputError(
            f"IP-Adapter '{file}' takes image features of width {wanted[-1]}, but image encoder "
            f"'{folder}' gives {what} {width}: pair the adapter with its own encoder",
            field="image_encoder",
        )
    return IPAdapterHandle(
        str(file), fingerprint_path(file), str(folder), fingerprint_path(folder), hidden_states
    )


def read_adapter(handle: IPAdapterHandle, ctx: NodeContext | None) -> dict[str, dict[str, Any]]:
    """The adapter's weights as `{"image_proj": {...}, "ip_adapter": {...}}` (CPU), as `load_ip_adapter`
    hands them to the UNet."""
    path = Path(handle.path)
    if ctx is not None:
        state = read_state_dict(path, ctx)
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        raise InputError(f"refusing to load pickled weights '{path}' without a run context", field="path")
    else:
        from safetensors.torch import load_file

        state = load_file(str(path))
    return split_state(state, path)


def load_image_encoder(handle: IPAdapterHandle, ctx: NodeContext | None) -> Any:
    """The CLIP image encoder on the CPU in eval mode (weights in fresh memory, see `own_storage`)."""
    from transformers import CLIPVisionModelWithProjection

    folder = Path(handle.encoder_path)
    safe = any(folder.glob("*.safetensors"))
    if not safe and not (ctx is not None and ctx.options.allow_pickle):
        raise InputError(
            f"refusing to load pickled image encoder weights in '{folder}'", field="image_encoder"
        )
    try:
        model = CLIPVisionModelWithProjection.from_pretrained(
            folder, local_files_only=True, use_safetensors=safe, **_whole_clip_config(folder)
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"cannot load image encoder '{folder}': {exc}", field="image_encoder") from exc
    return own_storage(model.eval())


def _whole_clip_config(folder: Path) -> dict[str, Any]:
    """`{"config": ...}` for a CLIPModel folder: its vision config with the projection width (without
    it transformers would build the projection at its default width and drop the saved one)."""
    from transformers import CLIPVisionConfig

    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "clip":
        return {}
    vision = vision_part(config)
    vision.pop("model_type", None)
    return {"config": CLIPVisionConfig(**vision)}


def feature_extractor(handle: IPAdapterHandle, encoder: Any) -> Any:
    """The encoder folder's own CLIPImageProcessor, else the one `load_ip_adapter` makes (its image size)."""
    from transformers import CLIPImageProcessor

    folder = Path(handle.encoder_path)
    if (folder / "preprocessor_config.json").is_file():
        return CLIPImageProcessor.from_pretrained(folder)
    size = int(encoder.config.image_size)
    return CLIPImageProcessor(size=size, crop_size=size)


@contextmanager
def resident(
    ctx: NodeContext | None, key: str, load: Callable[[], Any], device: Any = None, dtype: Any = None
) -> Iterator[Any]:
    """`load()`'s result, held by the run's residency manager (loaded once per key); a plain load without."""
    if ctx is None:
        value = load()
        yield value.to(device=device, dtype=dtype) if device is not None and hasattr(value, "to") else value
        return
    with ctx.resources.use(key, load, device=device, dtype=dtype) as value:
        yield value


def use_adapter_state(ctx: NodeContext | None, handle: IPAdapterHandle) -> Any:
    """The adapter's weights (a dict, kept resident on the CPU; the UNet's loader places them)."""
    return resident(ctx, f"{handle.fingerprint}:ip_adapter", lambda: read_adapter(handle, ctx))


def use_image_encoder(ctx: NodeContext | None, handle: IPAdapterHandle, device: Any, dtype: Any) -> Any:
    """The image encoder on `device`/`dtype`, resident and pinned for the block."""
    return resident(
        ctx,
        f"{handle.encoder_fingerprint}:image_encoder",
        lambda: load_image_encoder(handle, ctx),
        device,
        dtype,
    )
