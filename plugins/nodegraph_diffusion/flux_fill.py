"""FLUX.1-Fill (inpainting and outpainting models): the masked picture and the mask as a sampler condition.

A Fill transformer reads, per packed token, the noisy latents *and* what to keep: `FluxFillPipeline`
concatenates to the packed latents the packed VAE latents of the masked picture (`image * (1 - mask)`,
shifted and scaled like any Flux latents) and the packed mask, folded so that the 8x8 pixels under
each latent cell become 64 channels (`prepare_mask_latents`). Packing is a pure permutation of each
2x2 patch's channels, so packing the channel concatenation (16 latent + 16 masked + 64 mask = 96
channels) gives the pipeline's 384-channel tokens exactly: the condition hands the 80 extra channels
unpacked to the family's `denoise` (step kwarg `concat_latents`), which packs once. The loop does no
mask blending (the pipeline does none): the model repaints the masked area itself.

`diffusion.flux_fill` encodes like `diffusion.vae_encode_inpaint` (the very same draws in the same
order: the picture's latent sample, the noise, the masked picture's sample) and returns the latents
to start from *without* a noise mask, plus the condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

from nodegraph_core.types import Image, Mask
from pydantic import Field

from nodegraph.api import FactsRequest, InputError, NodeContext, node
from nodegraph_diffusion.channel_concat import CONCAT_KWARG
from nodegraph_diffusion.channel_concat import with_concat as concat_channels
from nodegraph_diffusion.conditions import Condition, SamplingSetup, StepInput
from nodegraph_diffusion.types import Latents, VaeHandle

if TYPE_CHECKING:
    import torch

FILL_SCALE = 8  # pixels per latent cell the mask folds (FLUX.1's VAE; FluxFillPipeline's vae_scale_factor)


def fold_mask(mask: torch.Tensor, scale: int = FILL_SCALE) -> torch.Tensor:
    """A binary pixel mask (B, 1, H, W) -> (B, scale*scale, H/scale, W/scale): each latent cell's pixels
    as channels, in FluxFillPipeline.prepare_mask_latents' order (its view/permute/reshape)."""
    b, _, height, width = mask.shape
    h, w = height // scale, width // scale
    folded = mask[:, 0, :, :].reshape(b, h, scale, w, scale).permute(0, 2, 4, 1, 3)
    return folded.reshape(b, scale * scale, h, w)


@dataclass(frozen=True, eq=False)
class FillCondition(Condition):
    """What a Fill model reads besides the latents: the masked picture's latents (B, 16, h, w) and the
    folded mask (B, 64, h, w), CPU float32; `channels` is their sum, the input width it adds."""

    masked: Any
    mask: Any

    @property
    def channels(self) -> int:
        return int(self.masked.shape[1]) + int(self.mask.shape[1])

    def activate(self, setup: SamplingSetup, ctx: NodeContext) -> ActiveFill:
        return ActiveFill(self, setup)


def misfit_message(expected: int, given: int) -> str:
    """Why a model reading `expected` extra channels cannot take a Fill condition giving `given`."""
    if expected <= 0:
        return (f"a Fill condition (diffusion.flux_fill: {given} channels of masked picture and mask) is "
                "for a Fill model (FLUX.1-Fill-dev, 384 input channels), but this model reads only its "
                "latents: load a Fill model, or inpaint with diffusion.vae_encode_inpaint instead")
    return (f"the model reads {expected} channels besides its latents, the Fill condition gives {given}: "
            "encode with the VAE of this model's family")


MISSING = ("a Fill model (FLUX.1-Fill) reads the masked picture and the mask besides its latents: give the "
           "sampler diffusion.flux_fill's `condition` in `conditions` (and its `latents`)")


class ActiveFill:
    """The condition during one sampler run: the same extra channels at every step (CFG-doubled)."""

    def __init__(self, fill: FillCondition, setup: SamplingSetup) -> None:
        import torch

        extra = torch.cat([fill.masked, fill.mask], dim=1).to(device=setup.device, dtype=setup.dtype)
        batch = setup.batch_size
        if extra.shape[0] != batch:
            if batch % extra.shape[0]:
                raise InputError(f"{extra.shape[0]} Fill images do not divide a batch of {batch} latents",
                                 field="conditions")
            extra = extra.repeat(batch // extra.shape[0], 1, 1, 1)  # the pipeline's per-prompt repeat
        self.extra = torch.cat([extra, extra]) if setup.do_cfg else extra

    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        return {CONCAT_KWARG: self.extra}

    def close(self) -> None:
        return None


def with_concat(latent_in: torch.Tensor, extra: dict[str, Any], wanted: int) -> torch.Tensor:
    """The denoiser's unpacked input: the latents with a condition's extra channels appended (a Fill
    model's), checked against the `wanted` extra channels the model reads (`concat_channels`), so a
    Fill model without its condition, or a plain model with one, is an InputError on `conditions`
    rather than a shape error inside the transformer."""
    return concat_channels(latent_in, extra, wanted, MISSING, misfit_message)


class FillOutputs(NamedTuple):
    latents: Latents  # the encoded picture to start from (no noise mask: the model repaints by itself)
    condition: FillCondition  # for diffusion.sample's `conditions`


def fill_facts(req: FactsRequest) -> dict[str, dict[str, Any]]:
    """Both outputs are of the VAE's family; the condition says it adds a Fill model's input channels."""
    from nodegraph_diffusion.family_facts import vae_encode_facts

    part = vae_encode_facts(req)["out"]
    return {"latents": part, "condition": {**part, "fill": True}}


@node("diffusion.flux_fill", version="1.0.0", facts=fill_facts)
def flux_fill(
    ctx: NodeContext,
    vae: Annotated[VaeHandle, Field(description="The Fill model's VAE")],
    image: Annotated[Image, Field(description="Picture to repaint or extend (sides multiples of 16)")],
    mask: Annotated[Mask, Field(description="Pixel mask of the picture's size, 1 (white) = repaint")],
    seed: Annotated[int, Field(ge=0, le=2**63 - 1, description="Seed of the latent samples (the sampler's)")]
    = 0,
) -> FillOutputs:
    """Prepare inpainting or outpainting with a FLUX.1-Fill model, as FluxFillPipeline does.

    Give `latents` to diffusion.sample and `condition` to its `conditions`, with the sampler's seed
    equal to this one: the graph then draws as the pipeline does and gives its pixels. The mask is
    thresholded at 0.5 (the pipeline's binarize), so a feathered outpaint mask repaints its band."""
    from nodegraph_diffusion.sampling import latent_mask
    from nodegraph_diffusion.vae_nodes import vae_encode_inpaint

    height, width = (int(n) for n in image.pixels.shape[-2:])
    if height % (2 * FILL_SCALE) or width % (2 * FILL_SCALE):
        raise InputError(f"image is {width}x{height}: a Fill model packs latents in 2x2 patches, so the "
                         f"sides must be multiples of {2 * FILL_SCALE} (pad or crop it first)", field="image")
    encoded = vae_encode_inpaint(ctx, vae, image, mask, seed)  # checks the mask's size
    binary = latent_mask(mask.pixels, height, width)  # thresholded at pixel size, as the pipeline's
    if binary.shape[0] < encoded.masked.samples.shape[0]:
        binary = binary.expand(encoded.masked.samples.shape[0], -1, -1, -1)
    start = encoded.latents
    condition = FillCondition(encoded.masked.samples, fold_mask(binary).contiguous())
    return FillOutputs(Latents(start.samples, drawn=start.drawn, family=start.family), condition)
