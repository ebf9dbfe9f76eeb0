"""Flux.1's own node: the embedded guidance scale, carried by the conditioning (like ComfyUI's
FluxGuidance), so diffusion.sample needs no Flux-only input and true CFG (`cfg`) stays separate."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from pydantic import Field

from nodegraph.api import InputError, node
from nodegraph_diffusion.types import Conditioning


def _keep_family(req: Any) -> Any:
    from nodegraph_diffusion.family_facts import passthrough

    return passthrough(req, {"out": "conditioning"})


@node("diffusion.flux_guidance", version="1.0.0", facts=_keep_family)
def flux_guidance(
    conditioning: Annotated[Conditioning, Field(description="Flux.1 conditioning (diffusion.encode_text)")],
    guidance: Annotated[float, Field(ge=0, le=100, description="Embedded guidance scale of guidance-"
                                                               "distilled models (FLUX.1-dev: 3.5 by "
                                                               "default; schnell ignores it)")] = 3.5,
) -> Conditioning:
    """Set the guidance scale a guidance-distilled Flux.1 model (FLUX.1-dev) is told at every step.

    This is FluxPipeline's `guidance_scale`, an input of the transformer, not classifier-free guidance:
    one transformer call per step. True CFG (the pipeline's `true_cfg_scale`) is diffusion.sample's
    `cfg` with a negative prompt."""
    if conditioning.family != "flux":
        raise InputError(f"the conditioning comes from a '{conditioning.family}' text encoder; the guidance "
                         "input is Flux.1's", field="conditioning")
    micro = tuple(sorted({**dict(conditioning.micro), "guidance": float(guidance)}.items()))
    return replace(conditioning, micro=micro)
