"""Skip-layer guidance (SLG), as StableDiffusion3Pipeline runs it for SD3.5-medium
(`skip_guidance_layers`, `skip_layer_guidance_scale`, `_start`, `_stop`): a condition for the sampler.

On the steps `i` of the `n`-step schedule with `start * n < i < stop * n`, and only with classifier-free
guidance on, the transformer runs a third time, on the positive prompt alone with the blocks `layers`
skipped, and the guided prediction becomes `guided + (positive - skipped) * scale` — the pipeline's
formula, operand for operand. The third call goes through the model family's own `denoise` with
`extra["skip_layers"]`, so only families whose denoiser can skip blocks take it (`ModelFamily.skip_layers`:
SD3); it gets no ControlNet residuals, as the pipeline has none there.
Stability's recommendation for stabilityai/stable-diffusion-3.5-medium: layers 7, 8, 9, scale 2.8,
start 0.01, stop 0.2 (the pipeline's defaults, the layers aside; the node's defaults here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from nodegraph.api import FactsRequest, InputError, NodeContext, node
from nodegraph_diffusion.conditions import Condition, SamplingSetup, StepInput

SD3_MEDIUM_LAYERS = (7, 8, 9)  # SD3.5-medium's model card
FAMILY = "sd3"  # StableDiffusion3Pipeline's feature: validation refuses it for other families' samplers


@dataclass(frozen=True, eq=False)
class SkipLayerGuidance(Condition):
    """Skip-layer guidance settings for `diffusion.sample`'s `conditions`."""

    layers: tuple[int, ...]
    scale: float
    start: float
    stop: float

    def activate(self, setup: SamplingSetup, ctx: NodeContext) -> ActiveSkipLayerGuidance:
        return ActiveSkipLayerGuidance(self, setup)


class ActiveSkipLayerGuidance:
    """Skip-layer guidance during one sampler run: checks the denoiser, then adds the third call."""

    def __init__(self, spec: SkipLayerGuidance, setup: SamplingSetup) -> None:
        family = setup.family
        if family is None or not getattr(family, "skip_layers", False):
            label = getattr(family, "label", None) or "this"
            raise InputError(f"skip-layer guidance skips transformer blocks of SD3/SD3.5 models; {label} "
                             "models' denoisers cannot skip blocks", field="conditions")
        blocks = int(setup.unet.config.get("num_layers", 0))
        outside = [layer for layer in spec.layers if not 0 <= layer < blocks]
        if outside:
            raise InputError(f"skip-layer guidance layers {outside} are not blocks of this transformer "
                             f"({blocks} blocks: 0 to {blocks - 1})", field="conditions")
        self.spec, self.setup = spec, setup

    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        return {}

    def after_guidance(self, step: StepInput, guided: Any, raw: Any, latents: Any) -> Any:
        setup, spec = self.setup, self.spec
        i, total = step.step_index, setup.num_steps
        if not setup.do_cfg or not (i > total * spec.start and i < total * spec.stop):
            return None
        n = setup.batch_size
        # the positive half of every input, in fresh storage like the pipeline's unbatched tensors
        embeds = step.encoder_hidden_states[n:].clone()
        added = {key: value[n:].clone() for key, value in (setup.added_cond_kwargs or {}).items()}
        extra = {"added_cond_kwargs": added, "skip_layers": list(spec.layers)}
        skipped = setup.family.denoise(setup.unet, latents, step.timestep, embeds, extra)
        positive = raw.chunk(2)[1]
        return guided + (positive - skipped) * spec.scale

    def close(self) -> None:
        return None


def _facts(req: FactsRequest) -> dict[str, dict[str, Any]]:
    return {"out": {"family": FAMILY, "made_by": req.node}}


@node("diffusion.skip_layer_guidance", version="1.0.0", facts=_facts)
def skip_layer_guidance(
    layers: Annotated[list[int], Field(
        min_length=1, description="Transformer blocks to skip in the extra call, from 0 (SD3.5-medium: 7, "
                                  "8, 9)")]
    = list(SD3_MEDIUM_LAYERS),  # noqa: B006 - pydantic copies defaults
    scale: Annotated[float, Field(ge=0, le=20, description="Skip-layer guidance scale "
                                                           "(skip_layer_guidance_scale)")] = 2.8,
    start: Annotated[float, Field(ge=0, le=1, description="Fraction of the steps after which it acts "
                                                          "(skip_layer_guidance_start)")] = 0.01,
    stop: Annotated[float, Field(ge=0, le=1, description="Fraction of the steps before which it stops "
                                                         "(skip_layer_guidance_stop)")] = 0.2,
) -> SkipLayerGuidance:
    """Skip-layer guidance for an SD3/SD3.5 sampler (StableDiffusion3Pipeline's `skip_guidance_layers`).

    Put it in diffusion.sample's `conditions`; it acts only with classifier-free guidance (cfg > 1 and a
    negative), on the steps between `start` and `stop`, and costs one more transformer call there."""
    if start >= stop:
        raise InputError(f"start {start} must be below stop {stop}", field="start")
    return SkipLayerGuidance(tuple(int(layer) for layer in layers), float(scale), float(start), float(stop))
