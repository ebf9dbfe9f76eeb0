"""A tiny random InstructPix2Pix ("tinyworld-ip2p") so graphs/instruct_edit.yaml runs offline.

timbrooks/instruct-pix2pix is SD1.5 with an 8-channel UNet input: 4 noisy latent channels and 4 of the
picture to edit. The stand-in is tinyworld's own text encoder, tokenizer, VAE and scheduler (copied,
the same weights: the picture is encoded into tinyworld's latent space) with a small UNet of 8 inputs,
random from its own seed: it does not follow instructions. It was the first committed copy; the
committed builtin:tinyworld-ip2p is now the one training/train_ip2p.py trained (the same layout, a
`training.json` marker beside it), which every test of the instruction-edit code runs against as well.

`python -m nodegraph_diffusion.tiny_ip2p build [ROOT]` writes the random stand-in (into ROOT: over
the committed built-in only if you mean to drop the trained model).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from nodegraph_diffusion.tiny import BUILTIN_DIR, UNET_CONFIG
from nodegraph_diffusion.tiny_tokenizer import write_tokenizer

NAME = "tinyworld-ip2p"
SEED = 17  # the UNet's own seed (the rest is tinyworld's trained weights)
# tinyworld's UNet, narrower (a smaller file), reading the picture's 4 latent channels besides its own
IP2P_UNET_CONFIG: dict[str, Any] = {**UNET_CONFIG, "in_channels": 8, "block_out_channels": (16, 32),
                                    "attention_head_dim": 4}


def tinyworld_parts(root: Path = BUILTIN_DIR) -> dict[str, Any]:
    """tinyworld's text encoder, tokenizer and VAE as diffusers/transformers objects (offline)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    base = root / "tinyworld"
    offline = {"local_files_only": True}
    return {"vae": AutoencoderKL.from_pretrained(base, subfolder="vae", **offline),
            "text_encoder": CLIPTextModel.from_pretrained(base, subfolder="text_encoder", **offline),
            "tokenizer": CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", **offline)}


def build_tiny_ip2p_components(seed: int = SEED, root: Path = BUILTIN_DIR) -> dict[str, Any]:
    """The tiny InstructPix2Pix's components as `StableDiffusionInstructPix2PixPipeline` kwargs."""
    import torch
    from diffusers import PNDMScheduler, UNet2DConditionModel

    from nodegraph_diffusion.tiny import _init_

    unet = UNet2DConditionModel(**IP2P_UNET_CONFIG)
    _init_(unet, torch.Generator("cpu").manual_seed(seed))
    scheduler = PNDMScheduler.from_pretrained(root / "tinyworld", subfolder="scheduler",
                                              local_files_only=True)
    return {**tinyworld_parts(root), "unet": unet.eval(), "scheduler": scheduler}


def save_tiny_ip2p(folder: Path, seed: int = SEED, root: Path = BUILTIN_DIR) -> Path:
    """Write the tiny InstructPix2Pix in diffusers layout (StableDiffusionInstructPix2PixPipeline's)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    folder = Path(folder)
    pipe = StableDiffusionInstructPix2PixPipeline(**build_tiny_ip2p_components(seed, root),
                                                  safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    write_tokenizer(folder / "tokenizer")  # vocab.json + merges.txt, as tinyworld ships them
    return folder


def main(argv: list[str]) -> int:
    """`python -m nodegraph_diffusion.tiny_ip2p build [ROOT]`: regenerate builtin/tinyworld-ip2p."""
    if not argv or argv[0] != "build":
        print("usage: python -m nodegraph_diffusion.tiny_ip2p build [ROOT]", file=sys.stderr)
        return 2
    root = Path(argv[1]) if len(argv) > 1 else BUILTIN_DIR
    if (root / NAME).exists():
        shutil.rmtree(root / NAME)
    save_tiny_ip2p(root / NAME, root=BUILTIN_DIR)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
