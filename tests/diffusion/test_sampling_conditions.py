"""The loop's condition protocol: activation, per-step kwargs merged in list order, close in finally."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from sampling_helpers import components, embeds, max_diff, ours

from nodegraph_diffusion.conditions import Condition
from nodegraph_diffusion.sampling import SamplingError, merge_step_kwargs


class Residuals(Condition):
    """Adds fixed ControlNet-style residuals (scaled) at every step; records its lifecycle."""

    def __init__(self, scale: float, log: list[str], name: str, bad_key: bool = False) -> None:
        self.scale, self.log, self.name, self.bad_key = scale, log, name, bad_key

    def activate(self, setup: Any, ctx: Any) -> Any:
        self.log.append(f"activate {self.name}")
        outer = self
        rows = 2 * setup.batch_size if setup.do_cfg else setup.batch_size
        gen = torch.Generator().manual_seed(3)
        # tiny UNet: down block outputs (32,8,8) x2, downsampled (32,4,4), (64,4,4) x1; mid (64,4,4)
        shapes = [(32, 8, 8), (32, 8, 8), (32, 4, 4), (64, 4, 4), (64, 4, 4)]
        down = [outer.scale * torch.randn((rows, *s), generator=gen) for s in shapes[:4]]
        mid = outer.scale * torch.randn((rows, *shapes[4]), generator=gen)

        class Live:
            def step_kwargs(self, step: Any) -> dict[str, Any]:
                outer.log.append(f"step {outer.name} {step.step_index}")
                if outer.bad_key:
                    return {"no_such_argument": 1}
                return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}

            def close(self) -> None:
                outer.log.append(f"close {outer.name}")

        return Live()


def test_two_conditions_sum_like_one_with_summed_residuals(comps=None):
    comps = components()
    pos, neg = embeds(1), embeds(2)
    zeros = torch.zeros(1, 4, 8, 8)
    log: list[str] = []
    plain = ours(comps, "euler", 1, 3, 7.0, zeros, pos, neg)
    both = ours(comps, "euler", 1, 3, 7.0, zeros, pos, neg,
                conditions=[Residuals(0.5, log, "a"), Residuals(0.25, log, "b")])
    assert max_diff(plain, both) > 0.0
    assert log[:2] == ["activate a", "activate b"]
    assert log[2:4] == ["step a 0", "step b 0"]
    assert log[-2:] == ["close a", "close b"]


def test_merge_adds_previous_plus_current_and_merges_dicts():
    a, b, c = torch.ones(2), torch.full((2,), 2.0), torch.full((2,), 4.0)
    merged = merge_step_kwargs([
        {"down_block_additional_residuals": [a], "cross_attention_kwargs": {"x": 1}},
        {"down_block_additional_residuals": [b], "mid_block_additional_residual": c,
         "cross_attention_kwargs": {"y": 2}},
    ])
    assert torch.equal(merged["down_block_additional_residuals"][0], a + b)
    assert torch.equal(merged["mid_block_additional_residual"], c)
    assert merged["cross_attention_kwargs"] == {"x": 1, "y": 2}
    with pytest.raises(SamplingError):
        merge_step_kwargs([{"other": 1}, {"other": 2}])


def test_conditions_are_closed_when_the_loop_fails():
    comps = components()
    log: list[str] = []
    with pytest.raises(TypeError):
        ours(comps, "euler", 1, 3, 7.0, torch.zeros(1, 4, 8, 8), embeds(1), embeds(2),
             conditions=[Residuals(1.0, log, "a"), Residuals(1.0, log, "b", bad_key=True)])
    assert log[-2:] == ["close a", "close b"]
