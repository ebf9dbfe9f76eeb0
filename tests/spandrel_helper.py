"""spandrel in tests: importable where torchvision is not, and a tiny ESRGAN saved as .safetensors.

Why a stand-in torchvision: spandrel imports torchvision at import time for two architectures we never
load (LaMa, RestoreFormer); PyPI's torchvision is built against CUDA torch, which a CPU torch cannot load,
and spandrel is installed with --no-deps (README). The stand-in is used only when no real torchvision
imports, and fails loudly if anything calls it. ESRGAN itself never touches torchvision.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest


def _stand_in_torchvision() -> None:
    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("torchvision is a test stand-in here (see tests/spandrel_helper.py)")

    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = type("InterpolationMode", (), {})  # type: ignore[attr-defined]
    functional.rotate = functional.normalize = unavailable  # type: ignore[attr-defined]
    root.transforms, transforms.functional = transforms, functional  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": root, "torchvision.transforms": transforms,
                        "torchvision.transforms.functional": functional})


def _drop_torchvision() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def spandrel() -> Any:
    """The spandrel module (skips the test when it is not installed at all).

    The stand-in is there only while spandrel imports, then removed again, so that libraries imported
    later (diffusers asks for torchvision's spec) see no torchvision rather than a fake one."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        _drop_torchvision()
        _stand_in_torchvision()
        try:
            return pytest.importorskip("spandrel", reason="pip install --no-deps spandrel==0.4.2 (README)")
        finally:
            _drop_torchvision()
    return pytest.importorskip("spandrel", reason="pip install --no-deps spandrel==0.4.2 (README)")


def tiny_esrgan(seed: int = 0, scale: int = 4) -> Any:
    """A small random ESRGAN (RRDBNet: 8 filters, 1 block) from spandrel's own architecture class."""
    import torch

    spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    return ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale).eval()


def save_tiny_esrgan(path: Path, seed: int = 0) -> Path:
    """The tiny ESRGAN's state dict as a .safetensors file (or a pickled .pth, by the suffix)."""
    import torch
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny_esrgan(seed).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
