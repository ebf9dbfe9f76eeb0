"""Regional conditioning with ComfyUI's semantics (`comfy/samplers.py`), as small pure functions.

A prompt side (positive or negative) is a list of *entries*: an embedding with an optional area
(latent cells) and a strength. At every model evaluation each entry is evaluated on its crop of the
latents; its output is weighted by `strength` times a feathered border (8 cells, or a quarter of the
crop, fading linearly on the sides that do not touch the image edge), summed into the full canvas
and divided by the summed weights (`calc_cond_batch` / `get_area_and_mult`). Before sampling, every
area entry of one side gets a twin on the other side with the same area (and strength), holding the
embedding of the other side's smallest entry that contains it (`create_cond_with_same_area_if_none`),
so CFG compares like with like. Entries with the same crop shape share one UNet call, in ComfyUI's
order (`calc_cond_batch` pops matching entries from the back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from nodegraph_diffusion.types import Area

Box = tuple[int, int, int, int]  # (height, width, y, x) in latent cells


@dataclass(frozen=True)
class Entry:
    """One conditioning entry, ready for the UNet: embeds batched to the latents, extra UNet inputs."""

    embeds: Any  # torch.Tensor (B, tokens, dim)
    area: Box | None = None
    strength: float = 1.0
    added: dict[str, Any] | None = None  # the family's per-entry UNet inputs (SDXL: text_embeds, time_ids)


def resolve_area(area: Area | None, height: int, width: int) -> Box | None:
    """An `Area` in latent cells of an (height, width) latent (`resolve_areas_and_cond_masks_multidim`)."""
    if area is None:
        return None
    if area.percentage:
        return (
            max(1, round(area.height * height)),
            max(1, round(area.width * width)),
            round(area.y * height),
            round(area.x * width),
        )
    return (int(area.height), int(area.width), int(area.y), int(area.x))


def _inside(inner: Box, outer: Box) -> bool:
    return (
        inner[2] >= outer[2]
        and inner[3] >= outer[3]
        and inner[0] + inner[2] <= outer[0] + outer[2]
        and inner[1] + inner[3] <= outer[1] + outer[3]
    )


def add_twin_areas(side: list[Entry], entry: Entry) -> None:
    """`create_cond_with_same_area_if_none`: give `side` an entry with `entry`'s area if it lacks one."""
    if entry.area is None:
        return
    smallest: Entry | None = None
    for other in side:
        if other.area is not None:
            if _inside(entry.area, other.area):
                if smallest is None or smallest.area is None:
                    smallest = other
                elif math.prod(smallest.area[:2]) > math.prod(other.area[:2]):
                    smallest = other
        elif smallest is None:
            smallest = other
    if smallest is None or smallest.area == entry.area:
        return
    side.append(replace(entry, embeds=smallest.embeds, added=smallest.added))


def pair_areas(positive: list[Entry], negative: list[Entry] | None) -> tuple[list[Entry], list[Entry] | None]:
    """Both sides after ComfyUI's twin-area pass (positive entries first, then negative ones)."""
    pos = list(positive)
    if negative is None:
        return pos, None
    neg = list(negative)
    for entry in list(pos):
        add_twin_areas(neg, entry)
    for entry in list(neg):
        add_twin_areas(pos, entry)
    return pos, neg


def clip_area(area: Box, height: int, width: int) -> Box:
    """`get_area_and_mult`: an area's size clipped so the crop stays inside the latent."""
    return (min(height - area[2], area[0]), min(width - area[3], area[1]), area[2], area[3])


def weight(area: Box | None, strength: float, like: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The weight (`mult`) of an entry's output over its crop `like`: strength, feathered inner borders."""
    import torch

    mult = torch.ones_like(like) * strength
    if area is None:
        return mult
    for i, full in enumerate((height, width)):
        size, offset = area[i], area[2 + i]
        rr = min(8, mult.shape[2 + i] // 4)
        if offset != 0:
            for t in range(rr):
                m = mult.narrow(i + 2, t, 1)
                m *= (1.0 / rr) * (t + 1)
        if size + offset < full:
            for t in range(rr):
                m = mult.narrow(i + 2, size - 1 - t, 1)
                m *= (1.0 / rr) * (t + 1)
    return mult


def crop(x: torch.Tensor, area: Box | None) -> torch.Tensor:
    """The part of (B, C, h, w) `x` an area covers (a view)."""
    if area is None:
        return x
    return x.narrow(2, area[2], area[0]).narrow(3, area[3], area[1])


def batches(entries: list[tuple[Entry, int]], height: int, width: int) -> list[list[tuple[Entry, int]]]:
    """Group (entry, side) pairs into UNet calls as `calc_cond_batch` does: same crop shape and token
    count go together, taken from the back of the matching list, so a plain call is [negative, positive]."""
    todo = [
        (replace(e, area=None if e.area is None else clip_area(e.area, height, width)), s) for e, s in entries
    ]
    calls: list[list[tuple[Entry, int]]] = []

    def shape(item: tuple[Entry, int]) -> tuple[Any, ...]:
        e = item[0]
        size = (height, width) if e.area is None else e.area[:2]
        return (*size, tuple(e.embeds.shape[1:]))

    while todo:
        first = shape(todo[0])
        matching = [i for i, item in enumerate(todo) if shape(item) == first]
        calls.append([todo.pop(i) for i in reversed(matching)])
    return calls
