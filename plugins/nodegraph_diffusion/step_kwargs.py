"""How the per-step UNet arguments of several conditions combine into one call.

ControlNets, T2I-Adapters, Flux/SD3 ControlNets and the channel-concat conditions each return extra
denoiser keyword arguments for a step (conditions.py); the loop merges them here, the way diffusers'
Multi-ControlNet models sum residuals, so any number of units share one UNet call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nodegraph_diffusion.schedule_plan import SamplingError

# residual lists: the UNet ControlNets' and T2I-Adapters', Flux ControlNets' (double- and single-stream
# blocks) and SD3 ControlNets', each summed over units as the diffusers Multi-ControlNet models sum them
LIST_SUMMED = ("down_block_additional_residuals", "down_intrablock_additional_residuals",
               "controlnet_block_samples", "controlnet_single_block_samples",
               "block_controlnet_hidden_states")
AGREED = ("controlnet_blocks_repeat",)  # a flag every unit that sets it must set alike
TENSOR_SUMMED = ("mid_block_additional_residual",)
DICT_MERGED = ("cross_attention_kwargs", "added_cond_kwargs")


def merge_step_kwargs(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge the extra UNet kwargs of several conditions, in list order.

    Residual lists are summed elementwise as `previous + current` (what `MultiControlNetModel` does),
    the mid residual likewise, dicts are merged (later keys win). Any other key may come from one
    condition only. Lists are always new list objects: the UNet pops from
    `down_intrablock_additional_residuals`.
    """
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if value is None:
                continue
            if key not in merged:
                if key in LIST_SUMMED:
                    merged[key] = list(value)
                elif key in DICT_MERGED:
                    merged[key] = dict(value)
                else:
                    merged[key] = value
            elif key in LIST_SUMMED:
                prev = merged[key]
                if len(prev) != len(value):
                    raise SamplingError(f"conditions give {key} of different lengths ({len(prev)}, "
                                        f"{len(value)})")
                merged[key] = [a + b for a, b in zip(prev, value, strict=True)]
            elif key in TENSOR_SUMMED:
                merged[key] = merged[key] + value
            elif key in DICT_MERGED:
                merged[key].update(value)
            elif key in AGREED and merged[key] == value:
                continue
            else:
                raise SamplingError(f"two conditions both set the UNet argument '{key}'")
    return merged
