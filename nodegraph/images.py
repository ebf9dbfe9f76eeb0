"""The pixel port types every pack shares: `Image` and `Mask`.

They live in the engine's public API (`nodegraph.api`) rather than in the core pack so that a pack
handling pixels depends on the engine only, and so that declaring a node that takes an `Image` never
imports torch: the classes hold a tensor but do not import the library that makes it.
`nodegraph_core.types` re-exports these same classes, so links between packs still fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, eq=False)
class Image:
    """A batch of RGB images: `pixels` is a float32 torch tensor (B, 3, H, W) in [0, 1], on the CPU.

    The same layout as diffusers' `output_type="pt"`, so decoded images compare directly with its
    pipelines. Build one from a tensor (`Image(pixels=torch.rand(1, 3, 64, 64))`) or from a PIL
    image: `torch.from_numpy(np.asarray(pil.convert("RGB"), dtype=np.float32) / 255)`, then
    `.permute(2, 0, 1).unsqueeze(0).contiguous()`. Nodes never modify `pixels` in place.
    `labels` optionally names each image of the batch (e.g. the word an attention heat map shows), so
    `core.save_image` can name the files by them (`{label}` in its path); nodes that make new pixels
    from old ones need not carry them on.
    """

    pixels: Any  # torch.Tensor
    labels: tuple[str, ...] = ()

    @property
    def batch(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return int(self.pixels.shape[-1]), int(self.pixels.shape[-2])


@dataclass(frozen=True, eq=False)
class Mask:
    """A batch of masks: `pixels` is a float32 tensor (B, 1, H, W) in [0, 1] on the CPU; 1 = repaint."""

    pixels: Any  # torch.Tensor
