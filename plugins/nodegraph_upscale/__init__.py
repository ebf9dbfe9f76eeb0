"""The `upscale` pack: pixel upscaling with ESRGAN-class models (ComfyUI's UpscaleModelLoader and
ImageUpscaleWithModel), through `spandrel`, which recognises the architecture from the weights.

Registered through the `nodegraph` entry-point group like every pack; `spandrel` is imported only when
a model is loaded (`pip install "nodegraph[upscale]"`).
"""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_register(registry: object) -> None:
    from nodegraph_upscale import nodes

    registry.add_module(nodes)  # type: ignore[attr-defined]
