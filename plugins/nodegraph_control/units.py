"""Port types of the control pack's conditioning units, importable without torch.

A unit is what a control node outputs and `diffusion.sample` takes in its `conditions` list. The node
catalogue (`nodes.py`) annotates its functions with these classes, so they must load as light as
the catalogue: they hold tensors (`Any`) but import no library that makes them. The heavy half of
each unit — preparing images, computing residuals, installing attention processors — lives in
`controlnet.py`, `t2i_adapter.py` and `ip_adapter.py`, imported by `activate` on first use.
Those modules re-export these classes under their old names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodegraph_core.types import Image
from nodegraph_diffusion.conditions import ActiveCondition, Condition, SamplingSetup

from nodegraph.api import NodeContext
from nodegraph_control.ip_adapter_files import IPAdapterHandle
from nodegraph_control.models import AdapterHandle, ControlNetHandle

BlockScales = dict[str, Any]


@dataclass(frozen=True, eq=False)
class ControlNetUnit(Condition):
    """One ControlNet with its control image, strength and active step range."""

    model: ControlNetHandle
    image: Image
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    guess_mode: bool = False

    def activate(self, setup: SamplingSetup, ctx: NodeContext) -> ActiveCondition:
        from nodegraph_control.controlnet import ActiveControlNet

        return ActiveControlNet(self, setup, ctx)


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
