"""Weights in memory the model owns: read once into fresh, aligned tensors, never a view of the file.

Why it matters: tensors loaded the usual way (`safetensors.torch.load_file`, `from_pretrained`) are
views of a memory-mapped file at arbitrary byte offsets, and CPU kernels pick vectorised paths by
alignment, so the same weights stored in a folder or in a single file gave outputs 1 ulp apart; a
mapped file edited later would also change the model under a run. The old cure cloned every tensor
after loading (a second copy of every weight: 0.19-0.31 s on a 136 MB UNet, as long as the load).
Here each tensor is read straight from the file into its own allocation (64-byte aligned by torch's
CPU allocator): one read, no copy, and `aliases_file` lets the loaders clone only what still is a
view (pickles, transformers' own loading), so the guarantee holds whatever path built the model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ALIGNMENT = 64  # bytes; torch's CPU allocator aligns every fresh allocation to this
_DTYPES = {  # safetensors dtype names -> torch dtype attribute names
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


class WeightsFileError(ValueError):
    """A safetensors file that cannot be read whole (truncated, bad header, unknown dtype)."""


def read_safetensors(path: Path, keep: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Every tensor of a .safetensors file (or those whose names `keep` accepts: one component of a
    6.9 GB SDXL single file, say), each read into its own fresh CPU allocation."""
    import torch

    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) != 8:
            raise WeightsFileError("file is shorter than a safetensors header")
        header_len = int.from_bytes(head, "little")
        try:
            header = json.loads(file.read(header_len))
        except (ValueError, UnicodeDecodeError) as exc:
            raise WeightsFileError(f"bad header: {exc}") from exc
        base = 8 + header_len
        state: dict[str, Any] = {}
        entries = sorted(((k, v) for k, v in header.items()
                          if k != "__metadata__" and (keep is None or keep(k))),
                         key=lambda kv: kv[1]["data_offsets"][0])
        for name, entry in entries:  # in file order: one forward pass over the file
            dtype_name = _DTYPES.get(entry.get("dtype", ""))
            if dtype_name is None:
                raise WeightsFileError(f"tensor '{name}' has unsupported dtype {entry.get('dtype')!r}")
            start, end = entry["data_offsets"]
            raw = torch.empty(end - start, dtype=torch.uint8)
            file.seek(base + start)
            if end > start and file.readinto(raw.numpy()) != end - start:
                raise WeightsFileError(f"file ends inside tensor '{name}' (truncated?)")
            dtype = getattr(torch, dtype_name)
            state[name] = raw.view(dtype).reshape(entry["shape"]) if end > start else \
                torch.empty(entry["shape"], dtype=dtype)
        return state


def _file_ranges() -> list[tuple[int, int]] | None:
    """Address ranges of this process mapped from files (Linux), or None where that cannot be read."""
    if not sys.platform.startswith("linux"):
        return None
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    lo, hi = parts[0].split("-")
                    ranges.append((int(lo, 16), int(hi, 16)))
    except OSError:
        return None
    return ranges


def aliases_file(tensor: Any, ranges: list[tuple[int, int]] | None) -> bool:
    """Whether a tensor may be a view of a weights file: misaligned, or inside a file mapping."""
    ptr = tensor.data_ptr()
    if ptr % ALIGNMENT:
        return True
    if ranges is None:  # cannot tell: treat it as a view
        return True
    return any(lo <= ptr < hi for lo, hi in ranges)


def own_storage(module: Any) -> Any:
    """Give each parameter and buffer that may still view a file its own memory; the rest is left be.

    After `read_safetensors`-based loading nothing needs it (a no-op check); after a library's own
    loading (transformers, pickles) every mapped tensor is copied, as before.
    """
    import torch

    ranges = _file_ranges()
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.numel() and aliases_file(tensor, ranges):
                tensor.data = tensor.data.clone()
    return module


def diffusers_from_folder(cls: Any, path: Path, subfolder: str | None) -> Any | None:
    """A diffusers model built from its folder's config with its weights read by `read_safetensors`.

    None when the folder is not the plain case (one `diffusion_pytorch_model.safetensors`, float32,
    keys matching the model exactly): the caller then uses `from_pretrained` and `own_storage`.
    """
    folder = path / subfolder if subfolder else path
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not weights.is_file() or not (folder / "config.json").is_file():
        return None
    from accelerate import init_empty_weights

    try:
        state = read_safetensors(weights)
    except (WeightsFileError, OSError):  # from_pretrained reads it again and reports it its own way
        return None
    if any(t.dtype != _float32() for t in state.values() if t.is_floating_point()):
        return None
    with init_empty_weights():
        model = cls.from_config(cls.load_config(folder))
    expected = set(model.state_dict())
    if set(state) != expected:
        return None
    model.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        return None
    model.register_to_config(_name_or_path=path)  # as from_pretrained records it
    return model.eval()


def _float32() -> Any:
    import torch

    return torch.float32
