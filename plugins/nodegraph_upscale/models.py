"""Loading upscale models through spandrel, under the run's residency manager.

spandrel tells the architecture (ESRGAN/RRDBNet, Real-ESRGAN compact, SwinIR, ...) and the scale from
the state dict alone, as ComfyUI's UpscaleModelLoader relies on. The weights are read by the diffusion
pack's `read_state_dict`, so pickled files are refused unless the run allows pickle (then read with
`weights_only=True`), like every other model file in nodegraph.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nodegraph.api import InputError, NodeContext
from nodegraph_upscale.types import UpscaleModelHandle

# ComfyUI strips this prefix from SwinIR-style checkpoints saved from a DataParallel wrapper
DATA_PARALLEL_PROBE = "module.layers.0.residual_group.blocks.0.norm1.weight"


def _spandrel() -> Any:
    try:
        import spandrel
    except ImportError as exc:
        raise InputError("upscale models need the 'spandrel' package: pip install 'nodegraph[upscale]' "
                         f"({exc})", field="model") from exc
    return spandrel


def load_descriptor(handle: UpscaleModelHandle, ctx: NodeContext) -> Any:
    """The spandrel `ImageModelDescriptor` of the handle's file, on the CPU in eval mode."""
    from nodegraph_diffusion.loading import read_state_dict

    state = read_state_dict(Path(handle.path), ctx, field="model")
    if DATA_PARALLEL_PROBE in state:
        state = {k.removeprefix("module."): v for k, v in state.items()}
    spandrel = _spandrel()
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError as exc:
        raise InputError(f"'{handle.path}' is no upscale model architecture spandrel knows ({exc})",
                         field="model") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise InputError(f"'{handle.path}' is a {descriptor.architecture.name} model, not a single-image "
                         "model (inpainting and restoration models with masks are not upscalers)",
                         field="model")
    return descriptor.eval()


class Resident:
    """What the residency manager holds: spandrel's descriptor, moved as one torch module.

    Why a wrapper: the manager places anything with `.to` and `.parameters`; the descriptor's own
    `.to` takes no keyword `dtype`, so this moves its model (the same module object) instead."""

    def __init__(self, descriptor: Any) -> None:
        self.descriptor = descriptor

    def parameters(self) -> Iterator[Any]:
        return iter(self.descriptor.model.parameters())

    def buffers(self) -> Iterator[Any]:
        return iter(self.descriptor.model.buffers())

    def to(self, device: Any = None, dtype: Any = None) -> Resident:
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        self.descriptor.model.to(**moves)
        return self


@contextmanager
def use_upscale_model(ctx: NodeContext, handle: UpscaleModelHandle, dtype: Any) -> Iterator[Any]:
    """The descriptor on the run's device in `dtype`, loaded once per run context, pinned for the block."""
    key = f"{handle.fingerprint}:upscale_model"
    with ctx.resources.use(key, lambda: Resident(load_descriptor(handle, ctx)), device=ctx.device,
                           dtype=dtype) as resident:
        yield resident.descriptor
