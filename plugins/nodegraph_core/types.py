"""Port types of the core pack. `Image` and `Mask` are defined once, in the engine's public API
(`nodegraph.api`), and re-exported here so that packs importing them from this module keep working."""

from __future__ import annotations

from nodegraph.api import Image, Mask

__all__ = ["Image", "Mask"]
