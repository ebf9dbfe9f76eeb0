"""FLUX.1-Kontext (instruction editing): a reference picture the transformer attends to, as a condition.

Kontext models have FLUX.1-dev's architecture; what differs is how `FluxKontextPipeline` calls them:
the reference picture is VAE-encoded (the latent mean, no random draw: `sample_mode="argmax"`),
packed like the latents and appended to them *along the token sequence*; its position ids are the
latents' kind with the first coordinate 1 instead of 0 (so RoPE tells reference from output tokens,
also when both are the same size); the transformer's prediction is cut back to the output tokens.
The schedule's shift (`mu`) counts the output tokens only.

`diffusion.flux_kontext` encodes the reference and returns the condition; the Flux family's `denoise`
calls `with_reference` to append it (step kwarg `reference_latents`, unpacked, CFG-doubled like the
latent input). The reference may have another size than the output (sides multiples of 16): the
pipeline's `_auto_resize` (snapping to Kontext's trained resolutions) is left to the graph (core.resize).
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
