"""control.canny_kornia: ComfyUI's Canny (kornia) — the same edges as kornia's own call, on the shape."""

from __future__ import annotations

import pytest
import torch
from nodegraph_control.kornia_nodes import canny_kornia
from nodegraph_core.types import Image

from nodegraph.api import InputError

kornia_filters = pytest.importorskip("kornia.filters", reason="pip install kornia (the test extra has it)")


def _square() -> torch.Tensor:
    img = torch.full((1, 3, 48, 48), 0.1)
    img[:, :, 12:36, 16:40] = 0.9
    return img


def test_equals_kornias_canny_as_comfyui_calls_it() -> None:
    img = _square() + 0.02 * torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    out = canny_kornia(Image(img), low_threshold=0.2, high_threshold=0.5).pixels
    _, edges = kornia_filters.canny(img, 0.2, 0.5)
    assert out.shape == (1, 3, 48, 48) and torch.equal(out, edges.repeat(1, 3, 1, 1))


def test_edges_follow_the_square_and_nothing_else() -> None:
    out = canny_kornia(Image(_square()), low_threshold=0.2, high_threshold=0.5).pixels[0, 0]
    on = torch.nonzero(out > 0.5)
    assert len(on) > 60  # the outline: about 2 x (24 + 24) pixels
    near_rows = ((on[:, 0] - 12).abs() <= 1) | ((on[:, 0] - 35).abs() <= 1)
    near_cols = ((on[:, 1] - 16).abs() <= 1) | ((on[:, 1] - 39).abs() <= 1)
    assert bool((near_rows | near_cols).all())  # every edge pixel lies on the square's border
    with pytest.raises(InputError, match="above"):
        canny_kornia(Image(_square()), low_threshold=0.6, high_threshold=0.5)
