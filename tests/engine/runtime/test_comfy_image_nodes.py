"""The core nodes that serve ComfyUI's image and mask classes, against references written here the way
ComfyUI computes them (its images are (B, H, W, C); ours (B, C, H, W)), or by an independent route."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from nodegraph_core.mask_nodes import composite_masked, grow_mask, invert_image, pad_for_outpaint
from nodegraph_core.scale_nodes import scale
from nodegraph_core.types import Image, Mask
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions
from nodegraph.api import InputError
from nodegraph.nodes.registry import PackSource, build_registry


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _reach(mask: torch.Tensor, k: int, metric: str) -> torch.Tensor:
    """1 where a masked pixel lies within distance k (L1 or L-infinity): binary dilation, by brute force."""
    h, w = mask.shape
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dy, dx = (gy[..., None] - ys).abs(), (gx[..., None] - xs).abs()
    dist = dy + dx if metric == "l1" else torch.maximum(dy, dx)
    return (dist <= k).any(dim=-1).float()


@pytest.mark.parametrize("tapered, metric", [(True, "l1"), (False, "linf")])
def test_grow_mask_is_a_k_step_dilation(tapered: bool, metric: str) -> None:
    plane = (_rand(24, 20) > 0.97).float()
    grown = grow_mask(Mask(plane[None, None]), expand=3, tapered_corners=tapered).pixels
    assert grown.shape == (1, 1, 24, 20)
    assert torch.equal(grown[0, 0], _reach(plane, 3, metric))


def test_grow_mask_negative_shrinks_and_keeps_grey_levels() -> None:
    import scipy.ndimage

    soft = _rand(1, 1, 16, 16, seed=3)
    shrunk = grow_mask(Mask(soft), expand=-2, tapered_corners=False).pixels
    foot = np.ones((3, 3))
    expected = scipy.ndimage.grey_erosion(scipy.ndimage.grey_erosion(soft[0, 0].numpy(), footprint=foot),
                                          footprint=foot)
    assert torch.equal(shrunk[0, 0], torch.from_numpy(expected))
    assert torch.equal(grow_mask(Mask(soft), expand=0).pixels, soft)


def _comfy_pad(image: torch.Tensor, left: int, top: int, right: int, bottom: int, feathering: int):
    """ComfyUI's ImagePadForOutpaint on a (B, H, W, C) image, its loops as they are."""
    d1, d2, d3, d4 = image.shape
    new = torch.ones((d1, d2 + top + bottom, d3 + left + right, d4), dtype=torch.float32) * 0.5
    new[:, top:top + d2, left:left + d3, :] = image
    mask = torch.ones((d2 + top + bottom, d3 + left + right), dtype=torch.float32)
    t = torch.zeros((d2, d3), dtype=torch.float32)
    if feathering > 0 and feathering * 2 < d2 and feathering * 2 < d3:
        for i in range(d2):
            for j in range(d3):
                dt = i if top != 0 else d2
                db = d2 - i if bottom != 0 else d2
                dl = j if left != 0 else d3
                dr = d3 - j if right != 0 else d3
                d = min(dt, db, dl, dr)
                if d >= feathering:
                    continue
                v = (feathering - d) / feathering
                t[i, j] = v * v
    mask[top:top + d2, left:left + d3] = t
    return new, mask


@pytest.mark.parametrize("sides, feathering", [((0, 16, 0, 8), 6), ((8, 0, 24, 0), 5), ((8, 8, 8, 8), 0),
                                               ((0, 8, 0, 0), 20)])
def test_pad_for_outpaint_equals_comfyui(sides: tuple[int, int, int, int], feathering: int) -> None:
    image = _rand(2, 3, 30, 36)
    ours = pad_for_outpaint(Image(image), *sides, feathering=feathering)
    new, mask = _comfy_pad(image.permute(0, 2, 3, 1), *sides, feathering)
    assert torch.equal(ours.image.pixels, new.permute(0, 3, 1, 2))
    assert torch.equal(ours.mask.pixels[0, 0], mask) and torch.equal(ours.mask.pixels[1, 0], mask)
    inner = mask[sides[1]:sides[1] + 30, sides[0]:sides[0] + 36]
    banded = bool(((inner > 0) & (inner < 1)).any())
    assert banded == (0 < feathering * 2 < 30)  # the band, unless the image is too small for it


def test_composite_masked_equals_comfyui_arithmetic() -> None:
    dest, src = _rand(1, 3, 20, 24, seed=1), _rand(1, 3, 10, 12, seed=2)
    small = _rand(1, 1, 5, 6, seed=4)  # resized (bilinear) to the source
    out = composite_masked(Image(dest), Image(src), x=16, y=14, mask=Mask(small)).pixels
    m = F.interpolate(small, size=(10, 12), mode="bilinear")
    expected = dest.clone()
    vis_h, vis_w = 20 - 14, 24 - 16  # the source is cut at the destination's edges
    for i in range(vis_h):
        for j in range(vis_w):
            a = m[0, 0, i, j]
            expected[0, :, 14 + i, 16 + j] = a * src[0, :, i, j] + (1 - a) * dest[0, :, 14 + i, 16 + j]
    assert torch.equal(out, expected)
    whole = composite_masked(Image(dest), Image(src), resize_source=True).pixels
    assert torch.equal(whole, F.interpolate(src, size=(20, 24), mode="bilinear"))
    assert torch.equal(invert_image(Image(dest)).pixels, 1.0 - dest)


def test_scale_follows_comfyui_common_upscale() -> None:
    img = _rand(1, 3, 32, 64)
    bhwc = img.permute(0, 2, 3, 1)  # ComfyUI's layout: it moves the channels before interpolating
    got = scale(Image(img), width=48, height=40, method="bilinear").pixels
    assert torch.equal(got, F.interpolate(bhwc.movedim(-1, 1), size=(40, 48), mode="bilinear"))
    by = scale(Image(img), scale_by=1.5, method="nearest-exact").pixels
    assert by.shape == (1, 3, 48, 96)
    assert torch.equal(by, F.interpolate(img, size=(48, 96), mode="nearest-exact"))
    cropped = scale(Image(img), width=16, height=16, method="area", crop="center").pixels
    assert torch.equal(cropped, F.interpolate(img[:, :, :, 16:48], size=(16, 16), mode="area"))
    assert scale(Image(img), height=16).pixels.shape == (1, 3, 16, 32)  # width from the aspect ratio
    lanczos = scale(Image(img), width=20, height=10, method="lanczos").pixels
    as8 = (np.clip(255.0 * bhwc[0].numpy(), 0, 255)).astype(np.uint8)
    ref = np.array(PILImage.fromarray(as8).resize((20, 10), PILImage.Resampling.LANCZOS)) / np.float32(255)
    assert torch.equal(lanczos[0], torch.from_numpy(ref.astype(np.float32)).permute(2, 0, 1))
    with pytest.raises(InputError, match="scale_by"):
        scale(Image(img))


def test_load_mask_reads_a_colour_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    PILImage.fromarray(rgba, mode="RGBA").save(tmp_path / "m.png")
    (tmp_path / "g.yaml").write_text(
        "version: 1\nnodes:\n  m: {type: core.load_mask, path: m.png, channel: green}\n")
    registry = build_registry([PackSource("core", "0.1.0", "nodegraph_core",
                                          lambda: importlib.import_module("nodegraph_core"))])
    result = Engine(registry).run(tmp_path / "g.yaml", options=RunOptions(out_dir=tmp_path / "o"))
    mask = result.outputs["m"]["out"].pixels
    assert torch.equal(mask[0, 0], torch.from_numpy(rgba[..., 1].astype(np.float32) / 255.0))
