"""ComfyUI's conditioning classes (ConditioningSetArea, ...Percentage, ...Strength, ConditioningCombine,
ConditioningZeroOut) as the diffusion pack's regional-conditioning nodes.

A converted CONDITIONING stays a `Cond` (a link plus the ControlNet units attached to it), so these
compose with ControlNetApply and reach the sampler like a plain prompt. Area sizes become params
(`area_width`, ...), so a workflow made for 1024 px runs at a test size with `--set`.
"""

from __future__ import annotations

from typing import Any

from nodegraph_comfyui.convert import ClassMapping, Cond, Converter
from nodegraph_comfyui.widgets import WIDGETS
from nodegraph_comfyui.workflow import WfNode


def _set_area(cv: Converter, n: WfNode, percentage: bool = False) -> list[Any]:
    cond = cv.input(n, "conditioning", kind=Cond)
    if cond is None:
        return [None]
    unit = "fraction of the image" if percentage else "pixels"
    sizes = {
        k: cv.param(f"area_{k}", cv.literal(n, k, 1.0 if percentage and k in ("width", "height") else 0),
                    f"Area {k} ({unit})", minimum=0)
        for k in ("width", "height", "x", "y")
    }
    name = cv.add("area", "diffusion.set_area", conditioning=cond.ref, **sizes,
                  strength=float(cv.literal(n, "strength", 1.0)), percentage=percentage or None)
    return [Cond("@" + name, cond.controls)]


def _area_strength(cv: Converter, n: WfNode) -> list[Any]:
    cond = cv.input(n, "conditioning", kind=Cond)
    if cond is None:
        return [None]
    name = cv.add("weighted", "diffusion.set_area_strength", conditioning=cond.ref,
                  strength=float(cv.literal(n, "strength", 1.0)))
    return [Cond("@" + name, cond.controls)]


def _combine(cv: Converter, n: WfNode) -> list[Any]:
    first, second = cv.input(n, "conditioning_1", kind=Cond), cv.input(n, "conditioning_2", kind=Cond)
    if first is None or second is None:
        return [None]
    name = cv.add("combined", "diffusion.combine", first=first.ref, second=second.ref)
    return [Cond("@" + name, tuple(dict.fromkeys([*first.controls, *second.controls])))]


def _zero_out(cv: Converter, n: WfNode) -> list[Any]:
    cond = cv.input(n, "conditioning", kind=Cond)
    if cond is None:
        return [None]
    return [Cond("@" + cv.add("zeroed", "diffusion.zero_out", conditioning=cond.ref), cond.controls)]


def _mapping(class_type: str, convert: Any, nodegraph: str, notes: str = "") -> ClassMapping:
    return ClassMapping(class_type, convert, WIDGETS.get(class_type, ()), False, nodegraph, notes)


def conditioning_mappings() -> list[ClassMapping]:
    """The conditioning classes, in the order docs/comfyui.md lists them."""
    return [
        _mapping(
            "ConditioningSetArea",
            _set_area,
            "diffusion.set_area",
            "pixels // 8 as ComfyUI; the area's prediction is feathered and averaged (k-sampler only)",
        ),
        _mapping(
            "ConditioningSetAreaPercentage",
            lambda cv, n: _set_area(cv, n, percentage=True),
            "diffusion.set_area (percentage)",
        ),
        _mapping("ConditioningSetAreaStrength", _area_strength, "diffusion.set_area_strength"),
        _mapping(
            "ConditioningCombine", _combine, "diffusion.combine", "ControlNet units with regions: not yet"
        ),
        _mapping("ConditioningZeroOut", _zero_out, "diffusion.zero_out", "of a single (non-combined) prompt"),
    ]
