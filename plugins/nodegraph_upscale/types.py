"""Port types of the upscale pack (light: no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from nodegraph_diffusion.paths import ModelRef


class UpscaleModelRef(ModelRef):
    """An upscale model file (`RealESRGAN_x4plus.safetensors`; searched in `upscale_models` folders)."""

    kind = "upscale_model"


@dataclass(frozen=True)
class UpscaleModelHandle:
    """Where an upscale model's weights are; the residency key is the content fingerprint."""

    __nodegraph_resident__ = True  # a model handle: the engine's order groups the nodes using one

    path: str
    fingerprint: str
