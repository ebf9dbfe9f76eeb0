"""Edge maps on a synthetic image: a white square on black."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nodegraph_control.nodes import canny, soft_edge
from nodegraph_core.types import Image

from nodegraph.api import InputError


def square() -> Image:
    pixels = torch.zeros(1, 3, 64, 64)
    pixels[:, :, 16:48, 16:48] = 1.0
    return Image(pixels)


def test_canny_finds_the_square_outline():
    out = canny(square(), low=100, high=200).pixels
    assert tuple(out.shape) == (1, 3, 64, 64)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    edges = out[0, 0].numpy()
    assert set(np.unique(edges).tolist()) == {0.0, 1.0}
    assert edges[14:50, 14:50].sum() == edges.sum() > 0  # all edges around the square
    assert edges[20:44, 20:44].sum() == 0  # none inside
    assert edges[15:17, 16:48].sum() + edges[47:49, 16:48].sum() >= 32  # top and bottom sides found


def test_canny_thresholds_matter():
    soft = Image(square().pixels * 0.1)  # weak gradients (a step of 26 grey levels)
    assert canny(soft, 10, 20).pixels.sum() > 0
    assert canny(soft, 250, 255).pixels.sum() == 0
    with pytest.raises(InputError, match="low threshold"):
        canny(soft, 200, 100)


def test_soft_edges_peak_at_the_border():
    out = soft_edge(square(), blur=1.0).pixels[0, 0]
    assert out.max().item() == 1.0
    assert out[32, 32].item() == 0.0 and out[2, 2].item() == 0.0
    assert out[32, 15:18].max().item() > 0.5
