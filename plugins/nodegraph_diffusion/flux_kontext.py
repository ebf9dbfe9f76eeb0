"""FLUX.1-Kontext (instruction editing): a reference picture the transformer attends to, as a condition.

Kontext models have FLUX.1-dev's architecture; what differs is how `FluxKontextPipeline` calls them:
the reference picture is VAE-encoded (the latent mean, no random draw: `sample_mode="argmax"`),
packed like the latents and appended to them *along the token sequence*; its position ids are the
latents' kind with the first coordinate 1 instead of 0 (so RoPE tells reference from output tokens,
also when both are the same size); the transformer's prediction is cut back to the output tokens.
The schedule's shift (`mu`) counts the output tokens only.

`diffusion.flux_kontext` encodes the reference and returns the condition; the Flux family's `denoise`
calls `with_reference` to append it (step kwarg `reference_latents`, unpacked, CFG-doubled like the
latent input). The reference may have another size than the output (sides multiples of 16).
`diffusion.kontext_resize` is the pipeline's own resize of the reference: snapped to the trained
resolution of the nearest aspect ratio (`_auto_resize`, the pipeline's default) or only floored to
multiples of 16, with PIL's Lanczos on the 8-bit picture, as its image processor resizes a PIL input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from nodegraph_core.types import Image
from pydantic import Field

from nodegraph.api import InputError, NodeContext, node
from nodegraph_diffusion import family_facts
from nodegraph_diffusion.conditions import Condition, SamplingSetup, StepInput
from nodegraph_diffusion.types import VaeHandle

if TYPE_CHECKING:
    import torch

REFERENCE_KWARG = "reference_latents"
PATCH_PIXELS = 16  # 8 pixels per latent cell x 2x2 patches
# (width, height) FLUX.1-Kontext was trained at (diffusers' PREFERRED_KONTEXT_RESOLUTIONS)
KONTEXT_SIZES = ((672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184),
                 (944, 1104), (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752),
                 (1456, 720), (1504, 688), (1568, 672))


@dataclass(frozen=True, eq=False)
class KontextCondition(Condition):
    """The encoded reference picture (B, 16, h, w), CPU float32, scaled and shifted like Flux latents."""

    reference: Any

    def activate(self, setup: SamplingSetup, ctx: NodeContext) -> ActiveKontext:
        return ActiveKontext(self, setup)


class ActiveKontext:
    """The condition during one sampler run: the same reference at every step (CFG-doubled)."""

    def __init__(self, kontext: KontextCondition, setup: SamplingSetup) -> None:
        import torch

        reference = kontext.reference.to(device=setup.device, dtype=setup.dtype)
        batch = setup.batch_size
        if reference.shape[0] != batch:
            if batch % reference.shape[0]:
                raise InputError(f"{reference.shape[0]} reference pictures do not divide a batch of {batch} "
                                 "latents", field="conditions")
            reference = torch.cat([reference] * (batch // reference.shape[0]))  # the pipeline's repeat
        self.reference = torch.cat([reference, reference]) if setup.do_cfg else reference

    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        return {REFERENCE_KWARG: self.reference}

    def close(self) -> None:
        return None


def with_reference(packed: torch.Tensor, ids: torch.Tensor,
                   reference: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states, position ids) for one transformer call: the packed latents (n, tokens, 64) and
    their ids, with the packed tokens of the Kontext `reference` (unpacked, CFG-doubled) and their ids
    (first coordinate 1) appended, as FluxKontextPipeline.prepare_latents builds them; unchanged
    without a reference. The caller cuts the prediction back to the first `packed.shape[1]` tokens."""
    import torch

    from nodegraph_diffusion.flux_sampling import image_ids, pack

    if reference is None:
        return packed, ids
    reference = reference[: packed.shape[0]].to(packed)  # the halves are the same (the loop's CFG cat)
    height, width = int(reference.shape[-2]), int(reference.shape[-1])
    reference_ids = image_ids(height, width, ids.device, ids.dtype)
    reference_ids[..., 0] = 1
    return torch.cat([packed, pack(reference)], dim=1), torch.cat([ids, reference_ids], dim=0)


def kontext_facts(req: Any) -> dict[str, dict[str, Any]]:
    """The condition is of the VAE's family (a control unit of another family is refused by the sampler)."""
    return {"out": family_facts.vae_encode_facts(req)["out"]}


@node("diffusion.flux_kontext", version="1.0.0", facts=kontext_facts)
def flux_kontext(
    ctx: NodeContext,
    vae: Annotated[VaeHandle, Field(description="The Kontext model's VAE")],
    image: Annotated[Image, Field(description="Reference picture to edit (sides multiples of 16; its size "
                                              "may differ from the output's)")],
) -> KontextCondition:
    """Give a FLUX.1-Kontext model a reference picture to edit by instruction, as FluxKontextPipeline.

    Put the condition in diffusion.sample's `conditions` and sample from empty latents of the output
    size; the prompt says what to change. Deterministic (the latent mean): the seed only sets the noise."""
    from nodegraph_diffusion.loading import use_vae
    from nodegraph_diffusion.vae_upcast import encode_finite

    height, width = (int(n) for n in image.pixels.shape[-2:])
    if height % PATCH_PIXELS or width % PATCH_PIXELS:
        raise InputError(f"image is {width}x{height}: Kontext packs the reference in 2x2 latent patches, so "
                         f"its sides must be multiples of {PATCH_PIXELS} (core.resize or core.crop it first)",
                         field="image")
    with use_vae(ctx, vae) as model:
        reference = encode_finite(ctx, model, image.pixels, None, "mean")
    return KontextCondition(reference.contiguous())


def kontext_size(width: int, height: int, snap: bool) -> tuple[int, int]:
    """The reference's (width, height) as FluxKontextPipeline picks it: the trained size of the nearest
    aspect ratio when snapping (ties: the first in the table, as the pipeline's min() takes), floored to
    multiples of 16."""
    if snap:
        aspect = width / height
        _, width, height = min((abs(aspect - w / h), w, h) for w, h in KONTEXT_SIZES)
    return width // PATCH_PIXELS * PATCH_PIXELS, height // PATCH_PIXELS * PATCH_PIXELS


@node("diffusion.kontext_resize", version="1.0.0")
def kontext_resize(
    image: Annotated[Image, Field(description="The reference picture, any size")],
    snap: Annotated[bool, Field(description="Snap to the Kontext training size of the nearest aspect ratio "
                                            "(the pipeline's default); false: only floor the sides to "
                                            "multiples of 16")] = True,
) -> Image:
    """Resize a reference picture for diffusion.flux_kontext as FluxKontextPipeline resizes its input."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    height, width = (int(n) for n in image.pixels.shape[-2:])
    new_width, new_height = kontext_size(width, height, snap)
    if new_width < PATCH_PIXELS or new_height < PATCH_PIXELS:
        raise InputError(f"image is {width}x{height}: too small for Kontext's 16-pixel patches",
                         field="image")
    if (new_width, new_height) == (width, height):
        return image
    out = []
    for picture in image.pixels.detach().to("cpu", torch.float32).clamp(0, 1):
        array = (picture.movedim(0, -1) * 255).round().to(torch.uint8).numpy()
        resized = PILImage.fromarray(array).resize((new_width, new_height), PILImage.Resampling.LANCZOS)
        out.append(torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).movedim(-1, 0))
    return Image(torch.stack(out).to(image.pixels.device, image.pixels.dtype))
