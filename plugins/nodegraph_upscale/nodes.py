"""Upscale nodes: load an ESRGAN-class model, apply it tile by tile (ComfyUI's upscale-model nodes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from nodegraph_core.types import Image
from pydantic import Field

from nodegraph.api import InputError, NodeContext, node
from nodegraph_upscale.types import UpscaleModelHandle, UpscaleModelRef

# A catalogue module: torch and spandrel are imported inside the node bodies.
SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")


@node("upscale.load_model", version="1.0.0")
def load_model(
    ctx: NodeContext,
    path: Annotated[UpscaleModelRef, Field(description="Upscale model file (e.g. RealESRGAN_x4plus"
                                                       ".safetensors), searched in --models DIR/"
                                                       "upscale_models; pickled .pth only with "
                                                       "--allow-pickle")],
) -> UpscaleModelHandle:
    """Name an upscale model (ESRGAN, Real-ESRGAN, SwinIR, ... as spandrel knows them) for upscale.apply.

    The weights are read when an upscale.apply node first runs; a pickled file is refused here unless
    the run allows pickle."""
    from nodegraph_diffusion.loading import refuse_pickle
    from nodegraph_diffusion.paths import fingerprint_path, resolve_model_ref

    file = resolve_model_ref(str(path), ctx, kind="upscale_model")
    if file.is_dir() or file.suffix.lower() not in SUFFIXES:
        raise InputError(f"'{file}' is not a weights file ({', '.join(SUFFIXES)})", field="path")
    refuse_pickle(Path(file), ctx)
    return UpscaleModelHandle(str(file.resolve()), fingerprint_path(file))


@node("upscale.apply", version="1.0.0")
def apply(
    ctx: NodeContext,
    model: Annotated[UpscaleModelHandle, Field(description="The upscale model (upscale.load_model)")],
    image: Annotated[Image, Field(description="Images to upscale")],
    tile: Annotated[int, Field(ge=16, le=4096, description="Tile edge in input pixels (ComfyUI: 512)")] = 512,
    overlap: Annotated[int, Field(ge=0, le=1024, description="Overlap between tiles, blended with ramps "
                                                             "(ComfyUI: 32)")] = 32,
) -> Image:
    """Upscale images with the model, tile by tile like ComfyUI's ImageUpscaleWithModel, clamped to [0, 1].

    Runs in float32 on the run's device, as ComfyUI runs these models (whatever the run's dtype)."""
    import torch

    from nodegraph_upscale.models import use_upscale_model
    from nodegraph_upscale.tiling import tile_count, tiled_scale

    if overlap >= tile:
        raise InputError(f"overlap {overlap} must be smaller than the tile {tile}", field="overlap")
    pixels = image.pixels
    steps = pixels.shape[0] * tile_count(int(pixels.shape[-2]), int(pixels.shape[-1]), tile, overlap)
    device = ctx.device
    with use_upscale_model(ctx, model, torch.float32) as descriptor, \
            ctx.progress(steps, "upscale") as advance:

        def run(piece: torch.Tensor) -> torch.Tensor:
            ctx.check_cancelled()
            with torch.no_grad():
                return descriptor(piece.to(device=device, dtype=torch.float32))

        out = tiled_scale(pixels, run, tile, overlap, float(descriptor.scale),
                          int(descriptor.output_channels), advance)
    return Image(torch.clamp(out, 0.0, 1.0))
