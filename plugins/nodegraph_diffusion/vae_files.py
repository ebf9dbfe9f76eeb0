"""Standalone VAE files (sdxl_vae.safetensors, vae-ft-mse-840000, ...): which family's config reads them.

A VAE single file holds weights only; the scaling factor between its latents and the UNet's (SD1.x
0.18215, SDXL 0.13025) and the tiling defaults live in a config, and the same architecture serves both
families, so the weights cannot say which config is right. The family is, in this order:
1. the one `diffusion.load_vae` is told (`family: sdxl`);
2. the only family with a shipped config for the file's encoder width (the tiny test models);
3. left open, and decided where the VAE is used: decoding takes the family of the latents it gets (an
   SDXL sampler's latents are decoded with SDXL's config). Encoding has no such context: an open VAE
   encodes as the first family claiming it (SD1.x), the latents record that, and a sampler of another
   family refuses them, saying to set `family:` on the VAE loader.
SD3's and Flux.1's VAEs (16 latent channels) share an encoder width with SD1.x's (4): a shipped config
claims a file only if its latent channels match too. SD3's and Flux.1's are the same architecture (only
their scaling and shift factors differ): BFL's `ae.safetensors` cannot be told from an SD3.5 VAE by its
weights, so the family is told or taken from the latents, as above.
Diffusers VAE folders (a `vae/` folder, madebyollin's sdxl-vae-fp16-fix) carry their own config.json:
they need none of this and belong to no family.

Light module (stdlib only): make_source calls it while loading; nothing here loads weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from nodegraph.api import InputError
from nodegraph_diffusion.families import available_families
from nodegraph_diffusion.types import ModelSource, VaeHandle

AUTO = "auto"
CONFIGS_DIR = Path(__file__).parent / "configs"
PREFIXES = ("", "first_stage_model.", "vae.")  # bare VAE files, and VAEs cut out of checkpoints


def vae_width(shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """The encoder's first width of a VAE file (LDM and diffusers layouts name it alike), or None."""
    for prefix in PREFIXES:
        shape = shapes.get(prefix + "encoder.conv_in.weight")
        if shape:
            return int(shape[0])
    return None


def vae_latent_channels(shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """The latent channels of a VAE file (its encoder's last conv gives mean and log-variance)."""
    for prefix in PREFIXES:
        shape = shapes.get(prefix + "encoder.conv_out.weight")
        if shape:
            return int(shape[0]) // 2
    return None


def _config_channels(config: str) -> int | None:
    file = CONFIGS_DIR / config / "vae" / "config.json"
    return int(json.loads(file.read_text()).get("latent_channels", 4)) if file.is_file() else None


def vae_choices(shapes: Mapping[str, tuple[int, ...]]) -> tuple[tuple[str, str], ...]:
    """(family, shipped config) of every family that can read a VAE file of these shapes, in order:
    its config has the file's encoder width and latent channels."""
    width, channels = vae_width(shapes), vae_latent_channels(shapes)
    return tuple((f.name, dict(f.vae_configs)[width]) for f in available_families()
                 if width is not None and width in dict(f.vae_configs)
                 and channels in (None, _config_channels(dict(f.vae_configs)[width])))


def vae_file_source(path: Path, fingerprint: str, shapes: Mapping[str, tuple[int, ...]],
                    configs_dir: Path, tokenizer: str | None, family: str = AUTO,
                    field: str = "path") -> ModelSource | None:
    """The source of a standalone VAE file, or None if it is not one any family reads.

    `family` (`auto` or a family name) is the loader's say; `auto` with several claimants leaves the
    family open (`family=""`, `vae_choices` set) for `in_context` to decide at the consuming node."""
    choices = vae_choices(shapes)
    if not choices:
        if family != AUTO and vae_width(shapes) is not None:
            raise InputError(f"'{path}' is a VAE of encoder width {vae_width(shapes)} and "
                             f"{vae_latent_channels(shapes)} latent channels, which no installed family "
                             "has a config for", field=field)
        return None
    if family != AUTO:
        picked = [c for c in choices if c[0] == family]
        if not picked:
            known = ", ".join(name for name, _ in choices)
            raise InputError(f"'{path}' is not a VAE family '{family}' reads (families with a config for "
                             f"it: {known})", field="family")
        choices = tuple(picked)
    name, config = choices[0]
    open_family = "" if len(choices) > 1 else name
    return ModelSource(str(path), fingerprint, "single_file_vae", config, str(configs_dir / config),
                       tokenizer, open_family, vae_choices=choices if open_family == "" else ())


def in_context(handle: VaeHandle, family: str | None) -> VaeHandle:
    """The handle read with `family`'s config when its own family is open and `family` can read it."""
    source = handle.source
    if source.family or not source.vae_choices or not family:
        return handle
    config = dict(source.vae_choices).get(family)
    if config is None:
        return handle
    folder = Path(source.config_dir or "").parent / config
    return replace(handle, source=replace(source, family=family, base=config, config_dir=str(folder),
                                          vae_choices=()))


def encoding_family(handle: VaeHandle) -> str | None:
    """The family whose latents an encode with this VAE gives (an open VAE: its first claimant's)."""
    source = handle.source
    if source.family:
        return source.family
    return source.vae_choices[0][0] if source.vae_choices else None
