"""Port types of the core pack, shared by every pack that handles pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, eq=False)
class Image:
    """A batch of RGB images: float32 tensor (B, 3, H, W) in [0, 1], on the CPU.

    The same layout as diffusers' `output_type="pt"`, so decoded images compare directly with its
    pipelines.
    """

    pixels: Any  # torch.Tensor

    @property
    def batch(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return int(self.pixels.shape[-1]), int(self.pixels.shape[-2])


@dataclass(frozen=True, eq=False)
class Mask:
    """A batch of masks: float32 tensor (B, 1, H, W) in [0, 1] on the CPU; 1 = repaint."""

    pixels: Any  # torch.Tensor
