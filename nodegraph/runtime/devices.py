"""Device and dtype policy: `auto` prefers CUDA, then MPS, then CPU; half precision only on GPUs."""

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
