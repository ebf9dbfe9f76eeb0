"""The sampler node: noise input, input errors, progress, cancellation, extras from conditions."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nodegraph.api import InputError
from nodegraph.runtime.context import Cancelled
from nodegraph_diffusion.conditions import Condition
from nodegraph_diffusion.latent_nodes import empty_latents, noise
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.sampler_nodes import sample
from nodegraph_diffusion.types import Conditioning


@pytest.fixture
def parts(ctx):
    model = load_model(ctx, path="builtin:tinyworld")
    g = torch.Generator().manual_seed(0)
    pos = Conditioning(torch.randn((1, 77, 32), generator=g))
    neg = Conditioning(torch.randn((1, 77, 32), generator=g))
    return model, pos, neg


def run(ctx, parts, **kw):
    model, pos, neg = parts
    kw.setdefault("latents", empty_latents(width=64, height=64))
    kw.setdefault("negative", neg)
    return sample(ctx, unet=model.unet, scheduler=model.scheduler, positive=pos, steps=4, **kw)


def test_noise_node_gives_same_result_as_seed(ctx, parts):
    lat = empty_latents(width=64, height=64, batch=2)
    a = run(ctx, parts, latents=lat, seed=12)
    b = run(ctx, parts, latents=lat, seed=12, noise=noise(seed=12, latents_like=lat))
    c = run(ctx, parts, latents=lat, seed=12, noise=noise(seed=13, latents_like=lat))
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)


def test_cfg_without_negative_is_an_input_error(ctx, parts):
    with pytest.raises(InputError) as err:
        run(ctx, parts, negative=None, cfg=7.5)
    assert err.value.field == "negative"
    assert run(ctx, parts, negative=None, cfg=1.0).samples.shape == (1, 4, 8, 8)


def test_bad_ranges_are_input_errors(ctx, parts):
    with pytest.raises(InputError):
        run(ctx, parts, start_step=4)
    lat = empty_latents(width=64, height=64)
    with pytest.raises(InputError) as err:
        run(ctx, parts, latents=lat, noise=noise(seed=1, latents_like=empty_latents(width=64, height=32)))
    assert err.value.field == "noise"


def test_progress_advances_once_per_unet_call(ctx, parts):
    calls: list[tuple[str, Any]] = []

    class Sink:
        def start_task(self, node_id, description, total):
            calls.append(("start", total))
            return "task"

        def advance(self, task, amount=1):
            calls.append(("advance", amount))

        def finish_task(self, task):
            calls.append(("finish", None))

    ctx.run.progress_sink = Sink()
    run(ctx, parts)
    # the model's own scheduler is PNDM (PLMS), which makes steps + 1 UNet calls
    assert calls[0] == ("start", 5) and calls[-1] == ("finish", None)
    assert sum(1 for c in calls if c[0] == "advance") == 5


def test_cancellation_stops_the_loop_and_closes_conditions(ctx, parts):
    log: list[str] = []

    class Cancelling(Condition):
        def activate(self, setup, node_ctx):
            class Live:
                def step_kwargs(self, step):
                    log.append(f"step {step.step_index}")
                    node_ctx.run.cancel_event.set()
                    return {}

                def close(self):
                    log.append("close")

            return Live()

    with pytest.raises(Cancelled):
        run(ctx, parts, conditions=[Cancelling()])
    assert log == ["step 0", "close"]


def test_condition_results_land_in_latents_extras(ctx, parts):
    class Reporter(Condition):
        def activate(self, setup, node_ctx):
            class Live:
                n = 0

                def step_kwargs(self, step):
                    self.n += 1
                    return {}

                def results(self):
                    return {"steps_seen": self.n}

                def close(self):
                    pass

            return Live()

    out = run(ctx, parts, conditions=[Reporter()])
    assert out.extras == {"steps_seen": 5}  # PNDM: steps + 1 UNet calls
