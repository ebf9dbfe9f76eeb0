"""Whether a LoRA file fits a model family, from its tensor names and shapes alone (no weights read).

An SD1.5 LoRA on an SDXL UNet (or the reverse) would otherwise fail deep inside peft with a shape error,
or worse, load only the layers whose names happen to match. Four cheap cues tell most files apart:
- the components the file patches: a second text encoder (`text_encoder_2.` in diffusers/peft files,
  `lora_te2_` in Kohya ones) exists only in families that list it in `lora_components`; a UNet
  (`unet.`, `lora_unet_down_blocks_…`) only in SD families, a transformer (`transformer.`, Kohya's and
  BFL/ComfyUI's `lora_unet_double_blocks_…` / `diffusion_model.single_blocks.…`) only in SD3 and Flux;
- layer names only one family's models have (`ModelFamily.lora_markers`: Flux.1's single-stream
  blocks, which SD3's MMDiT lacks);
- the input width of a cross-attention key projection (`attn2.to_k`'s down / A matrix, LyCORIS's
  `hada_w1_b`), which is the UNet's cross-attention width (SD1.x 768, SDXL 2048, the refiner 1280) and
  must be the model's own (its unet/config.json), or one of the family's `cross_attention_widths`;
- Kohya UNet names in the original model's blocks (`lora_unet_input_blocks_...`), which only a family
  with `lora_sgm_names` (SDXL) reads.
A file with none of them is not judged here: when it runs, the loader refuses UNet layers the model
lacks (lora.unplaced_unet_layers).
Light module: stdlib and the families' base only, so `nodegraph validate` can call it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from nodegraph_diffusion.families.base import ModelFamily

# Kohya and BFL/ComfyUI names of a transformer's layers (Flux.1's original blocks, SD3's), before the
# `lora_unet_` UNet names they share a prefix with; ComfyUI's CLIP-L names
TRANSFORMER_NAMES = re.compile(r"^(lora_unet_|diffusion_model\.)(double_blocks|single_blocks|joint_blocks|"
                               r"img_in|txt_in|time_in|vector_in|guidance_in|final_layer)|^lora_transformer_")
KOHYA_PARTS = (("text_encoders.clip_l.", "text_encoder"), ("lora_unet_", "unet"),
               ("lora_te2_", "text_encoder_2"), ("lora_te1_", "text_encoder"),
               ("lora_te_", "text_encoder"))
SGM_PREFIXES = ("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")
# suffixes of an attn2 key projection's input-side matrix, shape (rank, width), in the layouts diffusers reads
WIDTH_SUFFIXES = ("attn2.to_k.lora_A.weight", "attn2.to_k.lora.down.weight", "attn2_to_k.lora_down.weight",
                  "attn2_to_k.hada_w1_b")


def lora_parts(keys: Iterable[str]) -> set[str]:
    """The components a LoRA file has weights for ('unet', 'text_encoder', 'text_encoder_2', ...)."""
    parts: set[str] = set()
    for key in keys:
        if TRANSFORMER_NAMES.match(key):
            parts.add("transformer")
            continue
        kohya = next((part for prefix, part in KOHYA_PARTS if key.startswith(prefix)), None)
        parts.add(kohya or key.split(".", 1)[0])
    return parts


def cross_attention_widths(shapes: Mapping[str, tuple[int, ...]]) -> set[int]:
    """The UNet cross-attention widths a LoRA file's attn2 key projections are made for."""
    return {int(shape[-1]) for key, shape in shapes.items()
            if len(shape) == 2 and key.endswith(WIDTH_SUFFIXES)}


def foreign_markers(family: ModelFamily, keys: Iterable[str],
                    families: Iterable[ModelFamily]) -> dict[str, str]:
    """Layer names of other families' models (their `lora_markers`) that `keys` use and `family`'s
    models lack: marker -> that family's label (Flux.1's single blocks in a LoRA for SD3)."""
    keys = list(keys)
    found: dict[str, str] = {}
    for other in families:
        for marker in other.lora_markers:
            if (other.name != family.name and marker not in family.lora_markers
                    and any(marker in key for key in keys)):
                found.setdefault(marker, other.label)
    return found


def sgm_names(keys: Iterable[str]) -> bool:
    """Whether Kohya UNet keys name the original (SGM) blocks: `lora_unet_input_blocks_4_1_...`."""
    return any(k.startswith(SGM_PREFIXES) for k in keys)


def unet_width(folder: Path) -> int | None:
    """The cross-attention width in `folder`/unet/config.json (a diffusers folder or a shipped config)."""
    config = folder / "unet" / "config.json"
    try:
        width = json.loads(config.read_text()).get("cross_attention_dim")
    except (OSError, ValueError):
        return None
    return width if isinstance(width, int) else None


def lora_misfit(family: ModelFamily, shapes: Mapping[str, tuple[int, ...]], width: int | None = None,
                families: Iterable[ModelFamily] = ()) -> str | None:
    """Why a LoRA file with these tensors cannot be for `family`'s models, or None if it may be.

    `width` is the model's own cross-attention width when known (else any of the family's widths
    passes); `families` (every installed one) lets the message say which family the file looks made
    for."""
    families = list(families)
    parts = lora_parts(shapes) & {"unet", "transformer", "text_encoder", "text_encoder_2"}
    foreign = sorted(parts - set(family.lora_components))
    markers = foreign_markers(family, shapes, families)
    sgm = sgm_names(shapes)
    widths = cross_attention_widths(shapes)
    allowed = {width} if width else set(family.cross_attention_widths)
    odd = sorted(widths - allowed) if allowed else []
    odd_names = sgm and not family.lora_sgm_names
    if not foreign and not odd and not odd_names and not markers:
        return None
    fits = [f.label for f in families if f.name != family.name and set(f.lora_components) >= parts
            and (not widths or widths <= set(f.cross_attention_widths)) and (f.lora_sgm_names or not sgm)
            and not foreign_markers(f, shapes, families)]
    made = f" (it looks made for {' or '.join(fits)})" if fits else ""
    if foreign:
        why = f"it has weights for {', '.join(foreign)}, which {family.label} models do not have"
    elif markers:
        names = ", ".join(sorted(markers))
        why = (f"it patches {names} layers, which {' and '.join(sorted(set(markers.values())))} models have "
               f"and {family.label} models do not")
    elif odd_names:
        why = (f"it names UNet layers by the original model's blocks (lora_unet_input_blocks_...), as "
               f"SDXL's Kohya files do; {family.label} LoRA files name them down_blocks_...")
    else:
        why = (f"its UNet layers take {'/'.join(str(w) for w in odd)}-wide text states, this "
               f"{family.label} UNet takes {'/'.join(str(w) for w in sorted(allowed))}")
    return f"this LoRA is not for {family.label} models: {why}{made}"
