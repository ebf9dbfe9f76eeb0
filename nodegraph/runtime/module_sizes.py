"""Torch modules as the residency manager sees them: what counts as a model, its bytes, how it moves.

Kept apart from the manager so its policy reads without torch details; tests replace `module_bytes`
and `move_module` with fakes (`ResidencyManager(size_of=..., mover=...)`).
"""

from __future__ import annotations

from typing import Any

from nodegraph.runtime.devices import device_key


def is_module(value: Any) -> bool:
    """Torch modules (anything with `.to` and `.parameters`) are placed; other values stay on the host."""
    return hasattr(value, "to") and hasattr(value, "parameters")


def module_bytes(value: Any, dtype: Any = None) -> int:
    """Bytes of a module's parameters and buffers, floating ones counted at `dtype` when given."""
    if not is_module(value):
        return 0
    tensors = list(value.parameters())
    if hasattr(value, "buffers"):
        tensors += list(value.buffers())
    total = 0
    for t in {id(t): t for t in tensors}.values():
        size = t.element_size()
        if dtype is not None and t.is_floating_point():
            size = dtype.itemsize
        total += t.nelement() * size
    return total


def move_module(value: Any, device: str, dtype: Any) -> Any:
    """Move a torch module in place (floating weights to `dtype` when given)."""
    import torch

    target = torch.device(device)
    return value.to(device=target, dtype=dtype) if dtype is not None else value.to(target)


def weights_place(value: Any) -> tuple[str | None, Any]:
    """(device key, dtype) of a module's first parameter; (None, None) for values without any."""
    param = next(iter(value.parameters()), None) if is_module(value) else None
    if param is None:
        return None, None
    return device_key(param.device), param.dtype
