"""What the transformer ControlNet units (Flux: flux_controlnet.py, SD3: sd3_controlnet.py) share during
one sampler run: the ControlNet pinned on the sampler's device and dtype for the whole run, refused
before any step if made for another family, the control image VAE-encoded the way both pipelines
encode it (latent_control.py), the pipelines' `controlnet_keep` for the step range, and one ExitStack
that undoes all of it in `close` — or at once, if preparing the unit fails halfway.

A subclass says how its pipeline prepares the control input (`prepare`) and calls the net
(`step_kwargs`); everything before and after is here, once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch
from nodegraph_diffusion.conditions import SamplingSetup, StepInput

from nodegraph.api import InputError, NodeContext
from nodegraph_control.controlnet import keep
from nodegraph_control.latent_control import encode_sampled, prepare_pixels
from nodegraph_control.models import check_family, use_control_model
from nodegraph_control.units import ControlNetUnit


class ActiveTransformerControlNet:
    """A transformer ControlNet unit during one sampler run (subclasses: `prepare`, `step_kwargs`)."""

    def __init__(self, unit: ControlNetUnit, setup: SamplingSetup, ctx: NodeContext | None) -> None:
        self.unit, self.setup = unit, setup
        self._stack = ExitStack()
        try:
            self.model = self._stack.enter_context(
                use_control_model(ctx, unit.model, "controlnet", setup.device, setup.dtype))
            check_family(setup.unet, self.model, unit.model, "controlnet")
            self.prepare(ctx)
        except BaseException:
            self._stack.close()
            raise

    def prepare(self, ctx: NodeContext | None) -> None:
        """Make the control input (and anything else the net needs for the run) on `self`."""
        raise NotImplementedError

    def defer(self, callback: Callable[[], Any]) -> None:
        """Run `callback` on `close` (before the model is unpinned), to undo what `prepare` changed."""
        self._stack.callback(callback)

    def encoded_control(self, ctx: NodeContext | None, scale_factor: int, dtype: Any, doubled: bool,
                        shift: Callable[[Any], float]) -> torch.Tensor:
        """The control image normalised, resized (rounded to `scale_factor`), repeated to the batch, doubled
        for CFG if `doubled`, VAE-encoded and sampled from the unit's draw state: `(sample - shift(vae)) *
        scaling_factor` (`dtype` None: the VAE's)."""
        from nodegraph_diffusion.loading import use_vae

        setup, unit = self.setup, self.unit
        if unit.vae is None or ctx is None:
            raise InputError(f"ControlNet '{unit.model.path}' reads the control image VAE-encoded: give "
                             "control.controlnet the model's vae", field="vae")
        with use_vae(ctx, unit.vae) as vae:
            image = prepare_pixels(unit.image.pixels, setup.width, setup.height, setup.batch_size,
                                   scale_factor, setup.device, vae.dtype if dtype is None else dtype)
            if doubled:
                image = torch.cat([image] * 2)
            return encode_sampled(vae, image, unit.draw_state, shift(vae))

    def kept(self, step: StepInput) -> float:
        """1.0 on the steps of the unit's [start, end), else 0.0 (the pipelines' `controlnet_keep`)."""
        setup, unit = self.setup, self.unit
        return keep(step.step_index - setup.first_step, len(setup.timesteps), unit.start, unit.end)

    def step_kwargs(self, step: StepInput) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        self._stack.close()
