"""Stage 3: ControlNets for the trained base — pose (OpenPose skeletons) and edge (Canny maps).

`ControlNetModel.from_unet` copies the trained UNet's encoder and starts with zero convolutions (an
exact no-op), as the ControlNet paper does; the base UNet and text encoder stay frozen. 20% empty
captions teach the net to carry the layout on its own. Control images are drawn by the control pack's
own renderer/edge detector from the scenes behind the pre-encoded latents, so training sees what the
graphs feed at run time. Pose nets see figure scenes plus 10% object scenes (black skeleton: no
figure); edge nets see every kind of scene.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.common import Deadline, Progress, lr_factor, make_logger, optimizer_step
from training.data import LatentSet, control_tensor, controls_for, encode_world
from training.models import noise_scheduler, tokenize
from training.train_base import Ema, diffusion_loss, drop_captions

COND_CHANNELS = (16, 32, 64, 128)  # 3 stride-2 steps: 64 px -> 8 latent cells


def load_base(run: Path) -> tuple[Any, Any, Any]:
    """The trained UNet, text encoder and tokenizer of RUN/tinyworld, frozen."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = run / "tinyworld"
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    return unet.eval().requires_grad_(False), text.eval().requires_grad_(False), tokenizer


def choose(data: LatentSet, kind: str, limit: int, seed: int) -> list[int]:
    """Row numbers of `data` to train a `kind` net on (figures first for pose)."""
    rows = list(range(len(data.captions)))
    if kind == "pose":
        figures = [r for r in rows if data.captions[r].startswith("a person")]
        others = [r for r in rows if not data.captions[r].startswith("a person")]
        rows = figures + others[: len(figures) // 9]
    rng = np.random.default_rng(seed)
    rng.shuffle(rows)
    return sorted(rows[:limit])


def controlnet_residuals(net: Any, embeds: torch.Tensor, cond: torch.Tensor, noisy: torch.Tensor,
                         t: torch.Tensor) -> dict[str, Any]:
    """The UNet keyword arguments that add a ControlNet's residuals for this noisy input."""
    down, mid = net(noisy, t, encoder_hidden_states=embeds, controlnet_cond=cond, return_dict=False)
    return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def reframed_set(run: Path, seed: int, count: int) -> LatentSet:
    """RUN/latents-reframed.pt: `count` reframed figure scenes of world `seed` (encoded on first use)."""
    from diffusers import AutoencoderKL

    path = run / "latents-reframed.pt"
    if path.exists():
        data = LatentSet.load(path)
        if len(data.captions) >= count and data.seed == seed:
            return data
    vae = AutoencoderKL.from_pretrained(run / "vae", local_files_only=True).eval()
    data = encode_world(vae, seed, count, kinds=("figure",), framing="varied")
    data.save(path)
    return data


def train_controlnet(run: Path, kind: str = "pose", seed: int = 1, minutes: float = 15.0,
                     steps: int = 1_000_000, batch: int = 48, lr: float = 5e-4, drop: float = 0.2,
                     limit: int = 6000, save_every: int = 300, resume: bool = False, reframed: int = 0) -> Path:
    """Train a `kind` ("pose" or "edge") ControlNet for RUN/tinyworld; saves RUN/tinyworld-KIND.

    resume=True continues from RUN/tinyworld-KIND (e.g. after more base training) with a cosine
    learning-rate decay over the budget. reframed=N adds N figure scenes framed as real pose files
    frame them (close-ups, sideways stretch: world.reframe), encoded once into RUN/latents-reframed.pt.
    """
    from diffusers import ControlNetModel

    log = make_logger(run / f"{kind}.log")
    out = run / f"tinyworld-{kind}"
    unet, text_encoder, tokenizer = load_base(run)
    data = LatentSet.load(run / "latents.pt")
    rows = choose(data, kind, limit, seed)
    conds = control_tensor(controls_for(data.seed, [int(data.indices[r]) for r in rows], kind))
    latents = data.latents[rows]
    captions = [data.captions[r] for r in rows]
    if reframed:
        extra = reframed_set(run, seed + 30, reframed)
        conds = torch.cat([conds, control_tensor(controls_for(extra.seed, extra.indices.tolist(), kind, "varied"))])
        latents = torch.cat([latents, extra.latents])
        captions += extra.captions
        rows = list(range(len(captions)))
    with torch.no_grad():
        ids = tokenize(tokenizer, captions)
        embeds = torch.cat([text_encoder(ids[i:i + 256])[0] for i in range(0, len(rows), 256)])
        empty = text_encoder(tokenize(tokenizer, [""]))[0]
    log(f"{kind}: {len(rows)} samples with control images")
    torch.manual_seed(seed)
    if resume:
        net = ControlNetModel.from_pretrained(out, local_files_only=True).train()
    else:
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=COND_CHANNELS).train()
    ema = Ema(net, 0.998)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-2)
    deadline = Deadline(minutes, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 50, deadline, decay=resume))
    scheduler = noise_scheduler()
    gen = torch.Generator().manual_seed(seed + 100 if resume else seed)
    pick = np.random.default_rng(seed + 101 if resume else seed + 1)

    def save() -> None:
        ema.model.save_pretrained(out, safe_serialization=True)

    step = 0
    progress = Progress(kind, log, save, save_every)
    while not deadline.done(step):
        idx = torch.from_numpy(pick.integers(0, len(rows), size=batch))
        emb = drop_captions(embeds[idx], empty[0], pick, drop)
        loss = diffusion_loss(unet, scheduler, latents[idx], emb, gen,
                              extra=partial(controlnet_residuals, net, emb, conds[idx]))
        optimizer_step(loss, opt, net.parameters(), sched)
        ema.update(net, step)
        step += 1
        progress.after(step, float(loss.detach()))
    save()
    log(f"{kind} done: {step} steps")
    return out
