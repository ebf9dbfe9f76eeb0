"""Edge maps for edge ControlNets: Canny (OpenCV) and a cheap soft-edge map.

Canny follows controlnet_aux's `CannyDetector`: the RGB uint8 image goes straight into `cv2.Canny`
(OpenCV takes the strongest gradient over the channels), and the single-channel result is repeated
to three channels, white edges on black.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def to_uint8_rgb(pixels: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [0, 1] -> (B, H, W, 3) uint8, rounded (as images are saved)."""
    images = pixels.detach().cpu().float().clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray((images * 255).round().astype(np.uint8))


def from_gray_uint8(planes: list[np.ndarray]) -> torch.Tensor:
    """A list of (H, W) uint8 planes -> (B, 3, H, W) float32 in [0, 1], grey repeated to RGB."""
    stack = np.stack(planes).astype(np.float32) / 255.0
    return torch.from_numpy(stack)[:, None].repeat(1, 3, 1, 1).contiguous()


def canny(pixels: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Canny edges of every image in the batch (hysteresis thresholds `low` < `high`, 0..255 scale)."""
    return from_gray_uint8([cv2.Canny(img, int(low), int(high)) for img in to_uint8_rgb(pixels)])


def soft_edges(pixels: torch.Tensor, blur: float = 1.0) -> torch.Tensor:
    """Sobel gradient magnitude of the grey image, normalised to [0, 1] per image (a cheap soft-edge map).

    Not HED/PiDiNet (those need network weights); it gives soft, graded edges for soft-edge models.
    """
    planes = []
    for img in to_uint8_rgb(pixels):
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
        if blur > 0:
            grey = cv2.GaussianBlur(grey, (0, 0), blur)
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        mag = np.hypot(gx, gy)
        peak = float(mag.max())
        planes.append(np.round(mag / peak * 255).astype(np.uint8) if peak > 0 else np.zeros_like(img[..., 0]))
    return from_gray_uint8(planes)
