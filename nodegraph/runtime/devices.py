"""Device and dtype policy: `auto` prefers CUDA, then MPS, then CPU; half precision only on GPUs.

Also memory sizes (`--vram-budget 2GB`) and the default VRAM budget: the device total minus a margin.
"""

from __future__ import annotations

from typing import Any

from nodegraph.errors import NodegraphError

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_device(name: str) -> Any:
    """Map `auto|cpu|cuda|cuda:N|mps` to a `torch.device`, refusing devices this machine lacks."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise NodegraphError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NodegraphError(f"device '{name}' requested but CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise NodegraphError(f"device '{name}' requested but MPS is not available on this machine")
    return device


def resolve_dtype(name: str, device: Any) -> Any:
    """`auto` is fp16 on CUDA/MPS and fp32 on CPU; explicit names are honoured."""
    import torch

    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if name not in DTYPES:
        raise NodegraphError(f"unknown dtype '{name}' (use auto, float32, float16 or bfloat16)")
    return getattr(torch, DTYPES[name])


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
# what the default VRAM budget leaves free for activations, workspaces and the CUDA context
VRAM_MARGIN_BYTES = 2 * 2**30
VRAM_MARGIN_FRACTION = 0.1


def parse_size(text: str | int | float, what: str = "budget") -> int:
    """`"2GB"`, `"1500MiB"`, `"0.5g"` or a plain number of bytes -> bytes (decimal GB, binary GiB)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        raw = str(text).strip().lower().replace(" ", "")
        number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
        value_text, unit = number, raw[len(number):]
        try:
            value = float(value_text)
        except ValueError:
            value = -1.0
        if unit not in _UNITS:
            value = -1.0
    if value < 0:
        raise NodegraphError(f"{what} '{text}' is not a size (write e.g. 2GB, 1500MB, 8GiB)")
    return int(value * _UNITS[unit])


def format_size(size: int | None) -> str:
    """Bytes as a short human text (MB with one decimal below a GB, else GB with two)."""
    if size is None:
        return "unlimited"
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def device_key(device: Any) -> str:
    """A stable name for a device: `cuda` means the current CUDA device, so `cuda` and `cuda:0` agree."""
    text = str(device)
    if text == "cuda":
        import torch

        return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cuda:0"
    return text


def device_total_bytes(key: str) -> int | None:
    """Total memory of an accelerator (None for the CPU and for devices torch cannot report on)."""
    import torch

    if key.startswith("cuda") and torch.cuda.is_available():
        index = int(key.partition(":")[2] or 0)
        return int(torch.cuda.get_device_properties(index).total_memory)
    if key.startswith("mps") and torch.backends.mps.is_available():
        recommended = getattr(torch.mps, "recommended_max_memory", None)
        return int(recommended()) if recommended is not None else None
    return None


def default_vram_budget(key: str) -> int | None:
    """What the device has minus a margin (2 GiB or 10%, the larger); None where unknown (no limit)."""
    total = device_total_bytes(key)
    if total is None:
        return None
    return max(0, total - max(VRAM_MARGIN_BYTES, int(total * VRAM_MARGIN_FRACTION)))


def device_available(name: str) -> bool:
    """Whether `resolve_device(name)` would succeed on this machine (for portable per-node settings)."""
    try:
        device = resolve_device(name)
    except NodegraphError:
        return False
    if device.type == "cuda" and device.index is not None:
        import torch

        return device.index < torch.cuda.device_count()
    return True
