"""KSamplerAdvanced-style step ranges: [0, k) then [k, n) through two runs == one run of n steps."""

from __future__ import annotations

import pytest
import torch
from sampling_helpers import components, embeds, max_diff, ours, scheduler

from nodegraph_diffusion.sampling import SamplingError


@pytest.fixture(scope="module")
def comps():
    return components()


@pytest.mark.parametrize("sched", ["euler", "ddim", "heun"])
def test_two_runs_equal_one(comps, sched):
    pos, neg = embeds(1), embeds(2)
    zeros = torch.zeros(1, 4, 8, 8)
    whole = ours(comps, sched, 5, 8, 7.0, zeros, pos, neg)
    first = ours(comps, sched, 5, 8, 7.0, zeros, pos, neg, end_step=3, return_with_leftover_noise=True)
    second = ours(comps, sched, 99, 8, 7.0, first, pos, neg, start_step=3, add_noise=False)
    assert max_diff(first, whole) > 0.0
    assert max_diff(second, whole) == 0.0


def test_end_without_leftover_noise_returns_denoised_estimate(comps):
    """Euler's step is x' = x + (s1 - s0) * (x - x0) / s0, so x0 follows from two leftover runs.

    Tolerance 1e-4 (relative): the test solves the step equation back for x0, which rounds differently
    from the scheduler's forward arithmetic.
    """
    pos, neg = embeds(1), embeds(2)
    zeros = torch.zeros(1, 4, 8, 8)
    before = ours(comps, "euler", 5, 8, 7.0, zeros, pos, neg, end_step=1)
    noisy = ours(comps, "euler", 5, 8, 7.0, zeros, pos, neg, end_step=2)
    clean = ours(comps, "euler", 5, 8, 7.0, zeros, pos, neg, end_step=2, return_with_leftover_noise=False)
    sigmas = scheduler("euler")
    sigmas.set_timesteps(8)
    s0, s1 = float(sigmas.sigmas[1]), float(sigmas.sigmas[2])
    x0 = before - s0 * (noisy - before) / (s1 - s0)
    assert max_diff(clean, noisy) > 0.0
    assert torch.allclose(clean, x0, rtol=1e-4, atol=1e-4)


def test_empty_range_is_refused(comps):
    with pytest.raises(SamplingError, match="nothing to run"):
        ours(comps, "euler", 5, 4, 7.0, torch.zeros(1, 4, 8, 8), embeds(1), None, start_step=4)
