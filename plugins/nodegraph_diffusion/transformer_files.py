"""Denoiser-only files — the transformer files ComfyUI users have on disk — read by diffusers.

`flux1-dev.safetensors` (BFL layout; ComfyUI's copies add `model.diffusion_model.`), the same in
diffusers' names, `flux1-dev-fp8.safetensors` (float8_e4m3fn weights) and city96's GGUF files
(`flux1-dev-Q8_0.gguf`, `-Q4_0.gguf`, ...) hold a transformer and nothing else: its config comes from a
diffusers model folder or a shipped config, the rest of the model (text encoders, VAE, scheduler) from
the model whose UNetHandle the file replaces (`diffusion.load_transformer`).

How each is read (offline, with a local config):
- the layout: the family's `denoiser_state` converts the file's names by diffusers' converter (Flux:
  flux_bfl.py; SD3: Stability's `joint_blocks`), diffusers-named files pass as they are;
- plain weights (fp32/bf16/fp16): diffusers' `from_single_file`, in float32, then the run's dtype like
  any model;
- fp8 weights stay fp8 under diffusers' layerwise casting (`enable_layerwise_casting`): each layer is
  upcast for its own forward only; the layers diffusers keeps out of it (norms, embeddings, Flux's
  modulation `norm*.linear`) are held at the compute dtype. `fp8_model` builds that state without
  diffusers' intermediate whole model at the compute dtype, tensor for tensor what `from_single_file(
  torch_dtype=compute)` + `enable_layerwise_casting` give (tested). ComfyUI's *scaled* fp8 files
  (`scaled_fp8`, per-layer `scale_weight` / `weight_scale`) mean weight x scale, which layerwise
  casting cannot apply: refused, saying so;
- GGUF files by diffusers' GGUF quantizer (`GGUFQuantizationConfig(compute_dtype=...)`): weights stay
  quantized and are dequantized per layer at each call.
fp8 and GGUF models keep their storage: the residency manager moves them without casting (`residency`)
and the sampler computes in the model's own dtype (`model.dtype`, diffusers' answer for both).
The file's fit (family, tensor names, shapes) is checked at the node from its header alone, by
converting meta tensors of the header's shapes (`check_fits`), so a wrong file fails where it is named.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodegraph.api import InputError, NodeContext
from nodegraph_diffusion.families import ModelFamily, available_families, family_named
from nodegraph_diffusion.flux_bfl import COMFY_PREFIX, without_prefix
from nodegraph_diffusion.paths import fingerprint_path
from nodegraph_diffusion.types import ModelSource

FORMAT = "transformer_file"
GGUF = "gguf"
FP8 = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}  # safetensors dtype -> torch dtype name
SCALED_FP8 = ("scale_weight", "weight_scale", "scale_input", "input_scale", "comfy_quant")
SUFFIXES = (".safetensors", ".gguf")
SHOWN = 3  # names quoted in a misfit message


@dataclass(frozen=True)
class FileHeader:
    """What a denoiser-only file holds, from its header: tensor names (ComfyUI's prefix dropped) with
    their logical shapes, how the weights are stored ("", an fp8 dtype name, "gguf") and the stored
    tensor types (for messages: "F32, Q8_0")."""

    shapes: dict[str, tuple[int, ...]]
    storage: str
    kinds: tuple[str, ...]


def read_header(path: Path, field: str = "path") -> FileHeader:
    """The header of a .safetensors or .gguf transformer file; bad files become InputError on `field`."""
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        return _gguf_header(path, field)
    if suffix == ".safetensors":
        return _safetensors_header(path, field)
    raise InputError(f"'{path}' is not a .safetensors or .gguf file: transformer files are read in those "
                     "formats only", field=field)


def _safetensors_header(path: Path, field: str) -> FileHeader:
    try:
        size = path.stat().st_size
        with open(path, "rb") as raw:
            head = raw.read(8)
            if len(head) != 8:
                raise ValueError("the file is shorter than a safetensors header")
            length = int.from_bytes(head, "little")
            if length > size - 8:
                raise ValueError(f"its header claims {length} bytes of a {size}-byte file")
            entries = {k: v for k, v in json.loads(raw.read(length)).items() if k != "__metadata__"}
        end = max((int(v["data_offsets"][1]) for v in entries.values()), default=0)
        if 8 + length + end != size:
            raise ValueError(f"the file is {size} bytes, its header promises {8 + length + end}")
        shapes = {k.removeprefix(COMFY_PREFIX): tuple(int(n) for n in v["shape"]) for k, v in entries.items()}
        kinds = tuple(sorted({str(v["dtype"]) for v in entries.values()}))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ValueError: bad JSON, bad UTF-8 too
        raise InputError(f"cannot read '{path}' (corrupt or truncated safetensors?): {exc}",
                         field=field) from exc
    scaled = sorted(k for k in shapes if k == "scaled_fp8" or k.rsplit(".", 1)[-1] in SCALED_FP8)
    if scaled:
        raise InputError(f"'{path}' is a *scaled* fp8 file (ComfyUI's format: '{scaled[0]}'); its weights "
                         "mean fp8 x a per-layer scale, which diffusers' layerwise casting cannot apply. Use "
                         "a plain fp8 (e4m3fn) file, a bf16/fp16 one or a GGUF", field=field)
    fp8 = sorted({FP8[kind] for kind in kinds if kind in FP8})
    if len(fp8) > 1:
        raise InputError(f"'{path}' mixes fp8 kinds ({', '.join(fp8)}): one storage dtype is needed",
                         field=field)
    return FileHeader(shapes, fp8[0] if fp8 else "", kinds)


def _gguf_header(path: Path, field: str) -> FileHeader:
    try:
        import gguf
    except ImportError as exc:
        raise InputError("reading .gguf files needs the gguf package: pip install 'nodegraph[gguf]'",
                         field=field) from exc
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES

    plain = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    try:
        tensors = list(gguf.GGUFReader(str(path)).tensors)
        # GGUF lists dimensions innermost first; torch's shape is the reverse
        shapes = {t.name.removeprefix(COMFY_PREFIX): tuple(int(n) for n in reversed(t.shape.tolist()))
                  for t in tensors}
        unread = sorted({t.tensor_type.name for t in tensors
                         if t.tensor_type not in plain and t.tensor_type not in SUPPORTED_GGUF_QUANT_TYPES})
        kinds = tuple(sorted({t.tensor_type.name for t in tensors}))
    except Exception as exc:  # noqa: BLE001 - numpy and gguf raise many kinds for bad files
        raise InputError(f"cannot read '{path}' (corrupt or truncated GGUF?): {exc}", field=field) from exc
    if unread:
        raise InputError(f"'{path}' holds GGUF tensors of type {', '.join(unread)}, which diffusers' GGUF "
                         "support does not read", field=field)
    return FileHeader(shapes, GGUF, kinds)


def denoiser_folder(root: Path, family: ModelFamily) -> tuple[Path, str | None]:
    """(config folder, subfolder) that `from_single_file` reads the denoiser's config.json from: a
    model folder's `transformer/` (or `unet/`), or a denoiser folder itself."""
    sub = family.denoiser_component
    if (root / sub / "config.json").is_file():
        return root, sub
    if (root / "config.json").is_file():
        return root, None
    raise InputError(f"'{root}' holds neither {sub}/config.json nor config.json: `config` must name a "
                     f"shipped config, a diffusers model folder or its {sub} folder", field="config")


def _denoiser_config(root: Path, family: ModelFamily) -> dict[str, Any]:
    folder, sub = denoiser_folder(root, family)
    return dict(json.loads(((folder / sub) if sub else folder).joinpath("config.json").read_text()))


def check_fits(path: Path, header: FileHeader, family: ModelFamily, root: Path) -> None:
    """Raise InputError on 'path' unless the file holds exactly the tensors, at their shapes, of the
    `family` denoiser configured at `root` (read from the header: no weights are loaded)."""
    import diffusers
    import torch
    from accelerate import init_empty_weights

    keys = list(header.shapes)
    owner = next((f for f in available_families() if f.recognise_denoiser_keys(keys)), None)
    if owner is None:
        known = ", ".join(f.label for f in available_families() if type(f).recognise_denoiser_keys
                          is not ModelFamily.recognise_denoiser_keys)
        raise InputError(f"'{path}' is not a transformer file of a family this installation reads ({known})",
                         field="path")
    if owner.name != family.name:
        raise InputError(f"'{path}' is a transformer file for {owner.label} models, but 'unet' comes from "
                         f"{family.label}: give a {family.label} transformer file (or load an {owner.label} "
                         "model)", field="path")
    config = _denoiser_config(root, family)
    meta = {k: torch.empty(shape, device="meta") for k, shape in header.shapes.items()}
    try:
        converted = family.denoiser_state(meta, config)
    except (KeyError, ValueError, RuntimeError, IndexError) as exc:
        raise InputError(f"'{path}' does not fit the {family.label} transformer configured in '{root}': "
                         f"{type(exc).__name__}: {exc}", field="path") from exc
    with init_empty_weights():
        model = getattr(diffusers, family.denoiser_class).from_config(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = []
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted) if tuple(converted[k].shape) != expected[k])
    if missing:
        problems.append(f"{len(missing)} tensors missing ({', '.join(missing[:SHOWN])})")
    if extra:
        problems.append(f"{len(extra)} tensors the model has no use for ({', '.join(extra[:SHOWN])})")
    if wrong:
        shown = ", ".join(f"{k}: {tuple(converted[k].shape)} in the file, {expected[k]} in the model"
                          for k in wrong[:SHOWN])
        problems.append(f"{len(wrong)} of other shapes ({shown})")
    if problems:
        raise InputError(f"'{path}' does not fit the {family.label} transformer configured in '{root}': "
                         f"{'; '.join(problems)}", field="path")


def transformer_source(path: Path, header: FileHeader, family: ModelFamily, root: Path, base: str,
                       compute_dtype: str) -> ModelSource:
    """The source of a transformer file read with the config at `root`: the fingerprint covers the
    file, the denoiser's config.json (not the rest of `root`) and the storage, so another config or
    compute dtype is another resident model."""
    folder, sub = denoiser_folder(root, family)
    config = (folder / sub if sub else folder) / "config.json"
    digest = hashlib.sha256()
    for part in (fingerprint_path(path), fingerprint_path(config), header.storage, compute_dtype):
        digest.update(part.encode() + b"\0")
    return ModelSource(str(path), digest.hexdigest(), FORMAT, base, str(root), None, family.name,
                       storage=header.storage, compute_dtype=compute_dtype)


def compute_dtype(source: ModelSource, ctx: NodeContext) -> Any:
    """The torch dtype fp8/GGUF weights compute in: the source's, or the run's for "auto"."""
    import torch

    if source.compute_dtype == "auto":
        return ctx.dtype
    return getattr(torch, source.compute_dtype)


def residency(source: ModelSource, ctx: NodeContext, key: str) -> tuple[str, Any]:
    """(residency key, dtype to place it in): fp8/GGUF models are one resident per compute dtype and are
    moved, never cast (casting would undo their storage; diffusers refuses it for GGUF)."""
    if not source.storage:
        return key, ctx.dtype
    return f"{key}:{str(compute_dtype(source, ctx)).removeprefix('torch.')}", None


def load_transformer_file(source: ModelSource, ctx: NodeContext) -> Any:
    """Load a transformer file on CPU as the source says (see the module docstring)."""
    import diffusers
    import torch

    from nodegraph_diffusion.loading import read_state_dict
    from nodegraph_diffusion.owned import own_storage

    family = family_named(source.family)
    root = Path(source.config_dir or "")
    folder, sub = denoiser_folder(root, family)
    compute = compute_dtype(source, ctx)
    path = Path(source.path)
    kwargs: dict[str, Any] = {"config": str(folder), "subfolder": sub, "local_files_only": True}
    if source.storage == GGUF:
        from diffusers import GGUFQuantizationConfig
        from diffusers.models.model_loading_utils import load_gguf_checkpoint

        state = load_gguf_checkpoint(str(path))
        kwargs.update(quantization_config=GGUFQuantizationConfig(compute_dtype=compute), torch_dtype=compute)
    else:
        state = read_state_dict(path, ctx)
    config = _denoiser_config(root, family)
    state = family.denoiser_state(without_prefix(state), config)
    cls = getattr(diffusers, family.denoiser_class)
    if source.storage in FP8.values():
        return own_storage(fp8_model(cls, config, state, getattr(torch, source.storage), compute))
    return own_storage(cls.from_single_file(state, **kwargs).eval())


def fp8_model(cls: Any, config: dict[str, Any], state: dict[str, Any], storage: Any, compute: Any) -> Any:
    """A model of fp8 weights under diffusers' layerwise casting, never whole at the compute dtype.

    diffusers' own way — `from_single_file(..., torch_dtype=compute)` then `enable_layerwise_casting`
    — holds every weight at the compute dtype before casting the hooked layers back to fp8: for
    FLUX.1-dev's 12 B parameters a 24 GB (bf16) model next to the 12 GB file. Here the file's tensors
    are assigned as they are (`load_state_dict(assign=True)` into a model built on the meta device, as
    owned.py does), layerwise casting stores the layers it hooks in fp8 (no-op for fp8 weights), and
    only the layers it leaves out (norms, embeddings, Flux's modulation) are cast to the compute dtype.
    Each tensor ends as diffusers' way leaves it (fp8 -> compute -> fp8 is exact), for classes that keep
    no modules in float32 (`_keep_in_fp32_modules`: none for Flux's and SD3's transformers); the tests
    compare the two bit for bit at float32 and bfloat16."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls.from_config(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=compute)
    for module in model.modules():
        hooks = getattr(module, "_diffusers_hook", None)
        if hooks is not None and hooks.get_hook("layerwise_casting") is not None:
            continue  # stored in fp8, upcast per call
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if tensor.is_floating_point() and tensor.dtype != compute:
                tensor.data = tensor.data.to(compute)
    return model.eval()



@contextmanager
def adapters_at_compute(model: Any, source: ModelSource, adapters: tuple[str, ...]) -> Iterator[None]:
    """While new LoRA adapters are injected into an fp8-stored model, hold its layers at the compute
    dtype, then store them back in fp8 (exact: their values came from fp8).

    peft creates a LoRA's layers in its base layer's dtype and rounds the LoRA's weights to it — fp8
    under layerwise casting, which CPU kernels cannot even compute in. diffusers' own order (the LoRA
    loaded, then layerwise casting enabled) keeps the LoRA layers at the compute dtype: so do we. The
    cost is one transient copy of the hooked layers at the compute dtype when a LoRA is first loaded
    into the resident model; none when its adapters are already there (a changed weight)."""
    import torch

    loaded = getattr(model, "peft_config", None) or {}
    if source.storage not in FP8.values() or all(name in loaded for name in adapters):
        yield
        return
    storage, compute = getattr(torch, source.storage), model.dtype
    hooked = [m for m in model.modules() if getattr(m, "_diffusers_hook", None) is not None
              and m._diffusers_hook.get_hook("layerwise_casting") is not None]
    for module in hooked:
        module.to(compute)
    try:
        yield
    finally:
        for module in hooked:
            module.to(storage)
