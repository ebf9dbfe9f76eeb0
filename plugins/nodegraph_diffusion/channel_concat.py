"""Conditions that widen the denoiser's input: extra channels appended to the latents at every step.

Several model kinds read, besides their noisy latents, a picture's channels stacked onto them: FLUX.1
Fill (masked picture and mask, flux_fill.py), InstructPix2Pix (the picture to edit, instruct_pix2pix.py),
the SD x4 upscaler (the noised low-res picture, sd_upscale.py). Each is a condition whose step kwargs
carry the channels under `CONCAT_KWARG`; the family's `denoise` appends them with `with_concat`, which
checks that what is given is what the model reads (`ModelFamily.concat_channels`), so a wide model
without its condition, or a plain one with one, is an InputError on `conditions`, not a shape error
inside the UNet or transformer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nodegraph.api import InputError

if TYPE_CHECKING:
    import torch

CONCAT_KWARG = "concat_latents"  # the step kwarg a family's denoise appends to the latent input


def with_concat(latent_in: torch.Tensor, extra: dict[str, Any], wanted: int, missing: str,
                misfit: Callable[[int, int], str]) -> torch.Tensor:
    """The denoiser's input: `latent_in` with the condition's channels (popped from `extra`) appended
    along dim 1, as the pipelines `torch.cat([latent_model_input, image_latents], dim=1)`. `wanted` is
    how many the model reads; `missing` says what to do when none are given, `misfit(wanted, given)`
    when the count differs."""
    import torch

    concat = extra.pop(CONCAT_KWARG, None)
    given = 0 if concat is None else int(concat.shape[1])
    if given != wanted:
        raise InputError(missing if concat is None else misfit(wanted, given), field="conditions")
    if concat is None:
        return latent_in
    return torch.cat([latent_in, concat.to(latent_in)], dim=1)


def repeat_to_batch(extra: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """A condition's pictures (n, C, h, w) repeated to a batch of `batch` latents, as the pipelines
    repeat them per prompt (`torch.cat([x] * (batch // n))`); n must divide the batch."""
    import torch

    if extra.shape[0] == batch:
        return extra
    if batch % extra.shape[0]:
        raise InputError(f"{extra.shape[0]} {what} do not divide a batch of {batch} latents",
                         field="conditions")
    return torch.cat([extra] * (batch // extra.shape[0]), dim=0)
