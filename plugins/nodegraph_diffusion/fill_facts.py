"""Validation-time facts of wide models: a sampler's model and its channel-concat conditions must agree.

FLUX.1-Fill, InstructPix2Pix and the SD x4 upscaler read extra input channels from a condition
(channel_concat.py). What follows says it for Fill models; the others are checked alike, from the
`concat` channel count their conditions' facts carry.

A Fill transformer reads the masked picture and the mask besides its latents (flux_fill.py); sampled
without diffusion.flux_fill's condition it fails at its first call, and a plain model given one cannot
read it. Both are told by `nodegraph validate` (file, line, node, field; exit 2), from the denoiser's
config.json only: its `in_channels`, which the family turns into the extra channels it reads
(`ModelFamily.concat_channels`). Light module: stdlib, nodegraph.api, families.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodegraph.api import Fact, FactError, FactsRequest
from nodegraph_diffusion.families import ModelFamily, family_named

FILL_CHANNELS = 80  # what diffusion.flux_fill gives: 16 masked-picture latent + 64 folded-mask channels


def denoiser_facts(family: ModelFamily, root: Path) -> dict[str, Any]:
    """{"extra_channels": n} for a model whose denoiser reads n channels besides its latents (a Fill
    transformer: 80), {"extra_channels": 0} for a plain one; {} when the family does not say."""
    config = root / family.denoiser_component / "config.json"
    if not config.is_file():
        return {}
    in_channels = json.loads(config.read_text()).get("in_channels")
    extra = family.concat_channels(int(in_channels)) if isinstance(in_channels, int) else None
    return {} if extra is None else {"extra_channels": extra}


def check_fill(req: FactsRequest, family: str) -> None:
    """Refuse a wide model (a Fill, InstructPix2Pix or x4-upscaler one) without the condition that feeds
    its extra input channels, and such a condition on a model that reads other channels or none."""
    unet = req.upstream.get("unet")
    extra = unet.facts.get("extra_channels") if isinstance(unet, Fact) else None
    if extra is None or not isinstance(unet, Fact):
        return
    units = req.upstream.get("conditions")
    units = [u for u in (units if isinstance(units, list) else []) if isinstance(u, Fact)]
    fills = [u for u in units if u.facts.get("fill")]
    wide = [u for u in units if u.facts.get("concat")]
    found = family_named(family)
    label = found.label
    if extra and not fills and not wide:
        if extra == FILL_CHANNELS:
            raise FactError(f"'unet' from node '{unet.node}' is a {label} Fill model (it reads {extra} "
                            "channels of masked picture and mask besides its latents), but 'conditions' has "
                            "no Fill condition: add diffusion.flux_fill's `condition` to `conditions` and "
                            "start from its `latents`", field="conditions")
        needs = dict(found.concat_conditions).get(extra)
        raise FactError(f"'unet' from node '{unet.node}' is a {label} model whose denoiser reads {extra} "
                        "channels besides its latents" + (f" ({needs})" if needs else "") + ", but "
                        "'conditions' has no condition that gives them", field="conditions")
    if fills and extra != FILL_CHANNELS:
        what = "reads only its latents" if not extra else f"reads {extra} extra channels, not {FILL_CHANNELS}"
        raise FactError(f"'conditions' gets a Fill condition from node '{fills[0].node}', but 'unet' from "
                        f"node '{unet.node}' {what}: a Fill condition is for a Fill model (FLUX.1-Fill-dev); "
                        "load one, or inpaint this model with diffusion.vae_encode_inpaint",
                        field="conditions")
    given = sum(int(u.facts["concat"]) for u in wide)
    if wide and not fills and given != extra:
        first = wide[0]
        what = "reads only its latents" if not extra else f"reads {extra} channels besides its latents"
        raise FactError(f"'conditions' gets a condition for {first.facts.get('concat_for', 'a wider model')} "
                        f"from node '{first.node}' ({given} extra input channels), but 'unet' from node "
                        f"'{unet.node}' {what}: load the model that condition is made for",
                        field="conditions")
