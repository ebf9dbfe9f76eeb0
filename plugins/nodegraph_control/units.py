"""Port types of the control pack's conditioning units, importable without torch.

A unit is what a control node outputs and `diffusion.sample` takes in its `conditions` list. The node
catalogue (`nodes.py`) annotates its functions with these classes, so they must load as light as
the catalogue: they hold tensors (`Any`) but import no library that makes them. The heavy half of
each unit — preparing images, computing residuals, installing attention processors — lives in
`controlnet.py`, `t2i_adapter.py` and `ip_adapter.py`, imported by `activate` on first use.
Those modules re-export these classes under their old names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from nodegraph_core.types import Image
from nodegraph_diffusion.conditions import ActiveCondition, Condition, NoiseDraws, SamplingSetup
from nodegraph_diffusion.types import VaeHandle

from nodegraph.api import NodeContext
from nodegraph_control.ip_adapter_files import IPAdapterHandle
from nodegraph_control.models import AdapterHandle, ControlNetHandle

BlockScales = dict[str, Any]


# which module drives a ControlNet of each diffusers class (the model class, not the sampler's family,
# decides how it is called: its pipeline's way)
DRIVERS = (("ControlNetModel", "nodegraph_control.controlnet:ActiveControlNet"),
           ("FluxControlNetModel", "nodegraph_control.flux_controlnet:ActiveFluxControlNet"),
           ("SD3ControlNetModel", "nodegraph_control.sd3_controlnet:ActiveSD3ControlNet"))


@dataclass(frozen=True, eq=False)
class ControlNetUnit(Condition):
    """One ControlNet with its control image, strength and active step range.

    Transformer ControlNets (Flux, SD3) read the control image VAE-encoded (`vae`); a union ControlNet
    reads its control `mode`. `draw_state` is set by `before_noise` on the sampler's copy only: the
    state of the generator the control image's latent sample is drawn from, as the pipeline draws it."""

    model: ControlNetHandle
    image: Image
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    guess_mode: bool = False
    vae: VaeHandle | None = None
    mode: int | None = None
    draw_state: Any = None

    def before_noise(self, draws: NoiseDraws) -> ControlNetUnit:
        """Take the draws of this unit's control-image encoding, where its pipeline takes them."""
        if not self.model.latent_image:
            return self
        from nodegraph_control.latent_control import take_draws

        return replace(self, draw_state=take_draws(self.model.model_class, draws))

    def activate(self, setup: SamplingSetup, ctx: NodeContext) -> ActiveCondition:
        import importlib

        module, _, name = dict(DRIVERS)[self.model.model_class].partition(":")
        return getattr(importlib.import_module(module), name)(self, setup, ctx)


@dataclass(frozen=True, eq=False)
class AdapterUnit(Condition):
    """One T2I-Adapter with its control image and weight."""

    model: AdapterHandle
    image: Image
    weight: float = 1.0
    end: float = 1.0

    def activate(self, setup: SamplingSetup, ctx: NodeContext) -> ActiveCondition:
        from nodegraph_control.t2i_adapter import activate_adapter

        return activate_adapter(self, setup, ctx)


@dataclass(frozen=True, eq=False)
class IPImageEmbeds:
    """Encoded reference images for one IP-Adapter: (1, images, D) or (1, images, tokens, W), CPU float32."""

    embeds: Any  # conditional
    negative: Any  # unconditional: zeros, or the hidden states of a black image (Plus / Full)
    encoder_fingerprint: str  # which image encoder made them (checked against the adapter)
    hidden_states: bool


@dataclass(frozen=True, eq=False)
class IPAdapterUnit(Condition):
    """An IP-Adapter with its encoded reference image(s) and scale (float or per-block dict)."""

    model: IPAdapterHandle
    embeds: IPImageEmbeds
    scale: float = 1.0
    block_scales: BlockScales | None = None

    def activate(self, setup: SamplingSetup, ctx: NodeContext) -> ActiveCondition:
        from nodegraph_control.ip_adapter import ActiveIPAdapter

        return ActiveIPAdapter(self, setup, ctx)
