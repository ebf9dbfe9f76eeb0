"""Model families: found here, defined one per module (base.py says what a family is).

The built-in families (SD1.x, SDXL, SD3, Flux.1) come first; a third-party package adds one with an entry
point in the group `nodegraph_diffusion.families` naming a `ModelFamily` subclass or instance:

    [project.entry-points."nodegraph_diffusion.families"]
    myfamily = "my_pack.family:MyFamily"

The group belongs to this pack, not to the engine: the engine knows nothing of families, and the
diffusion nodes only ask `family_named(handle.source.family)`. A family whose entry point fails to
load, or that reuses a taken name, is left out (the built-ins always win their names). Nothing is
cached at module level: each look-up reads the entry points again (milliseconds), so tests can inject
a fake source with `monkeypatch.setattr(families, "third_party_families", ...)`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Mapping
from typing import Any

from nodegraph_diffusion.families.base import DenoiseRequest, ModelFamily, PromptRequest

ENTRY_POINT_GROUP = "nodegraph_diffusion.families"
BUILTIN = ("nodegraph_diffusion.families.sd1:SD1Family", "nodegraph_diffusion.families.sdxl:SDXLFamily",
           "nodegraph_diffusion.families.sd3:SD3Family", "nodegraph_diffusion.families.flux:FluxFamily")

__all__ = ["DenoiseRequest", "ModelFamily", "PromptRequest", "available_families", "config_family",
           "family_named", "file_family", "folder_family", "width_family"]


def _instance(obj: Any) -> ModelFamily:
    family = obj() if isinstance(obj, type) else obj
    if not isinstance(family, ModelFamily) or not family.name:
        raise TypeError(f"{obj!r} is not a named nodegraph_diffusion ModelFamily")
    return family


def _load(target: str) -> ModelFamily:
    module, _, attr = target.partition(":")
    return _instance(getattr(importlib.import_module(module), attr))


def third_party_families() -> list[ModelFamily]:
    """Families other packages declare in the entry-point group, by entry-point name."""
    found = []
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            found.append(_instance(ep.load()))
        except Exception:  # noqa: BLE001 - a broken third-party family must not break the others
            continue
    return found


def _builtin_families() -> list[ModelFamily]:
    return [_load(t) for t in BUILTIN]


def available_families() -> tuple[ModelFamily, ...]:
    """Every family, built-ins first; a later family reusing a taken name is left out."""
    families: dict[str, ModelFamily] = {}
    for family in [*_builtin_families(), *third_party_families()]:
        families.setdefault(family.name, family)
    return tuple(families.values())


def family_named(name: str) -> ModelFamily:
    """The family handles call `name`; KeyError (listing the known ones) if none is installed.

    A built-in name is answered without reading the entry points: built-ins always win their names, and
    the scan costs ~14 ms, which the sampler's per-node look-ups made a fifth of a tiny Flux run."""
    for family in _builtin_families():
        if family.name == name:
            return family
    families = available_families()
    for family in families:
        if family.name == name:
            return family
    raise KeyError(f"no model family '{name}' is installed (known: {', '.join(f.name for f in families)})")


def folder_family(index: Mapping[str, Any]) -> ModelFamily | None:
    """The family of a diffusers folder, from its model_index.json; None if no family claims it."""
    return next((f for f in available_families() if f.recognise_folder(index)), None)


def config_family(config: Mapping[str, Any]) -> ModelFamily | None:
    """The family a UNet-like component's config.json (e.g. a ControlNet's) belongs to, if any claims it."""
    return next((f for f in available_families() if f.recognise_config(config)), None)


def width_family(width: int) -> ModelFamily | None:
    """The family whose UNets attend to context `width` wide (an IP-Adapter's), if any claims it."""
    return next((f for f in available_families() if f.recognise_cross_attention(width)), None)


def file_family(shapes: Mapping[str, tuple[int, ...]]) -> tuple[ModelFamily, str] | None:
    """(family, shipped config name) of a single-file checkpoint, from its tensor names and shapes."""
    for family in available_families():
        config = family.recognise_keys(shapes)
        if config is not None:
            return family, config
    return None
