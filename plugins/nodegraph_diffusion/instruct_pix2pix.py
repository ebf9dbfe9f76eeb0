"""InstructPix2Pix (editing a picture by an instruction) as a condition on the ordinary sampler.

An InstructPix2Pix UNet (timbrooks/instruct-pix2pix: SD1.5 with 8 input channels) reads, besides its
noisy latents, the VAE latents of the picture to edit. `StableDiffusionInstructPix2PixPipeline` takes
them as the latent distribution's mode, *not* multiplied by the scaling factor (`prepare_image_latents`),
appends them to the scaled latent input at every step, and guides with three branches in one UNet call:
`[text + image, image only, neither]` (text states `[positive, negative, negative]`, picture latents
`[image, image, zeros]`), combined as `uncond + text_scale * (text - image) + image_scale * (image -
uncond)`; it guides only when `guidance_scale > 1` and `image_guidance_scale >= 1`, else runs the first
branch alone. The condition here supplies exactly that: its channels through the channel-concat step
kwarg (channel_concat.py, appended by the family's `denoise`) and its guidance strategy through the
`guidance` hook (guidance.py), so the loop does what the pipeline does without knowing about it. The
sampler's `cfg` is the text scale, the node's `image_guidance` the image scale. Nothing is drawn at
random: the pipeline's only draw is the initial noise, which the sampler takes first as it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

from nodegraph_core.types import Image
from pydantic import Field

from nodegraph.api import FactsRequest, InputError, NodeContext, node
from nodegraph_diffusion.channel_concat import CONCAT_KWARG, repeat_to_batch
from nodegraph_diffusion.conditions import Condition, SamplingSetup, StepInput
from nodegraph_diffusion.types import Latents, VaeHandle

if TYPE_CHECKING:
    import torch

IMAGE_CHANNELS = 4  # the picture's VAE latents: what an InstructPix2Pix UNet reads besides its latents
VAE_SCALE = 8  # pixels per latent cell (SD1.x's VAE)


@dataclass(frozen=True)
class ImageTextGuidance:
    """The pipeline's three-branch guidance (see the module docstring); `on=False`: one branch."""

    text_scale: float
    image_scale: float
    on: bool

    @property
    def branches(self) -> int:
        return 3 if self.on else 1

    def embeds(self, positive: torch.Tensor, negative: torch.Tensor | None) -> torch.Tensor:
        import torch

        if not self.on:
            return positive
        assert negative is not None
        return torch.cat([positive, negative, negative])

    def expand(self, latents: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.cat([latents] * 3) if self.on else latents

    def combine(self, noise_pred: torch.Tensor) -> torch.Tensor:
        if not self.on:
            return noise_pred
        noise_pred_text, noise_pred_image, noise_pred_uncond = noise_pred.chunk(3)
        return (noise_pred_uncond + self.text_scale * (noise_pred_text - noise_pred_image)
                + self.image_scale * (noise_pred_image - noise_pred_uncond))


@dataclass(frozen=True, eq=False)
class InstructPix2PixCondition(Condition):
    """The picture to edit as unscaled VAE latents (n, 4, h, w), CPU float32, and the image scale."""

    image_latents: Any
    image_guidance: float

    def guidance(self, cfg: float, do_cfg: bool) -> ImageTextGuidance:
        """The pipeline guides when `guidance_scale > 1` (the sampler's do_cfg: cfg > 1 with a negative)
        and `image_guidance_scale >= 1`."""
        return ImageTextGuidance(float(cfg), self.image_guidance, do_cfg and self.image_guidance >= 1.0)

    def activate(self, setup: SamplingSetup, ctx: NodeContext) -> ActiveInstructPix2Pix:
        return ActiveInstructPix2Pix(self, setup)


class ActiveInstructPix2Pix:
    """The condition in one sampler run: the picture's latents in the branch order, at every step."""

    def __init__(self, spec: InstructPix2PixCondition, setup: SamplingSetup) -> None:
        import torch

        if not isinstance(setup.guidance, ImageTextGuidance):
            raise InputError("an InstructPix2Pix condition guides with its own three branches: sample with "
                             "a diffusers scheduler (the model's, or diffusion.scheduler), not a k-sampler",
                             field="conditions")
        family = setup.family
        reads = None if family is None else family.concat_channels(int(setup.unet.config.in_channels))
        if reads != IMAGE_CHANNELS:
            raise InputError(f"an InstructPix2Pix condition adds {IMAGE_CHANNELS} input channels (the "
                             f"picture's latents), but this UNet has {setup.unet.config.in_channels} inputs "
                             "and reads " + ("none" if not reads else f"{reads}") + " besides its latents: "
                             "load an InstructPix2Pix model (timbrooks/instruct-pix2pix, "
                             "builtin:tinyworld-ip2p)", field="conditions")
        image = spec.image_latents.to(device=setup.device, dtype=setup.dtype)
        cells = (setup.height // VAE_SCALE, setup.width // VAE_SCALE)
        if tuple(image.shape[-2:]) != cells:
            size = f"{image.shape[-1] * VAE_SCALE}x{image.shape[-2] * VAE_SCALE}"
            raise InputError(f"the picture to edit is {size} pixels, the sampler's latents are for "
                             f"{setup.width}x{setup.height}: start from the instruct_pix2pix node's "
                             "`latents`", field="conditions")
        image = repeat_to_batch(image, setup.batch_size, "pictures to edit")
        if setup.guidance.on:
            image = torch.cat([image, image, torch.zeros_like(image)], dim=0)
        self.image = image

    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        return {CONCAT_KWARG: self.image}

    def close(self) -> None:
        return None


class InstructPix2PixOutputs(NamedTuple):
    latents: Latents  # empty latents of the picture's size, for the sampler's `latents`
    condition: InstructPix2PixCondition  # for diffusion.sample's `conditions`


def _facts(req: FactsRequest) -> dict[str, dict[str, Any]]:
    """Both outputs are of the VAE's family; the condition adds 4 input channels (validation checks the
    UNet reads them, channel_facts.py)."""
    from nodegraph_diffusion.family_facts import vae_encode_facts

    part = vae_encode_facts(req)["out"]
    return {"latents": {**part, "made_by": req.node},
            "condition": {**part, "concat": IMAGE_CHANNELS, "concat_for": "an InstructPix2Pix model"}}


@node("diffusion.instruct_pix2pix", version="1.0.0", facts=_facts)
def instruct_pix2pix(
    ctx: NodeContext,
    vae: Annotated[VaeHandle, Field(description="The InstructPix2Pix model's VAE")],
    image: Annotated[Image, Field(description="Picture to edit (sides multiples of 8)")],
    image_guidance: Annotated[float, Field(ge=0, le=20, description=(
        "How closely the edit keeps to the picture (the pipeline's image_guidance_scale; below 1: no "
        "guidance at all, as the pipeline). The text's scale is the sampler's cfg"))] = 1.5,
) -> InstructPix2PixOutputs:
    """Edit a picture by an instruction with an InstructPix2Pix model, as its diffusers pipeline does.

    Give `latents` to diffusion.sample and `condition` to its `conditions`; the prompt is the
    instruction ("make the circle blue"), the negative usually an empty prompt, the sampler's `cfg` the
    text guidance scale. The graph then gives StableDiffusionInstructPix2PixPipeline's pixels."""
    import torch

    from nodegraph_diffusion.loading import use_vae
    from nodegraph_diffusion.vae_files import encoding_family
    from nodegraph_diffusion.vae_upcast import encode_finite

    width, height = image.size
    if width % VAE_SCALE or height % VAE_SCALE:
        raise InputError(f"image is {width}x{height}; width and height must be multiples of {VAE_SCALE} "
                         "(resize or crop it first)", field="image")
    with use_vae(ctx, vae) as model:
        latents = encode_finite(ctx, model, image.pixels, None, "mean", scaled=False)
    family = encoding_family(vae)
    empty = Latents(torch.zeros_like(latents), family=family)
    return InstructPix2PixOutputs(empty, InstructPix2PixCondition(latents, float(image_guidance)))
