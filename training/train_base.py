"""Stage 2: pre-encode the world with the trained VAE, then train UNet + CLIP text encoder together.

Standard SD recipe at toy scale: epsilon prediction on SD1.5's noise schedule, the text encoder
trained from scratch with the UNet (our tokenizer, 77 positions, padded with EOS as the pipelines
do), 10% empty captions so classifier-free guidance works, Min-SNR-5 loss weighting (converges
faster on a short budget) and an EMA of the weights, which is what gets saved.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.common import Deadline, Progress, lr_factor, make_logger, optimizer_step
from training.data import LatentSet, encode_world
from training.models import make_tokenizer, new_text_encoder, new_unet, noise_scheduler, save_pipeline, tokenize


def encode_stage(run: Path, seed: int, count: int) -> Path:
    """Encode `count` scenes of world `seed` with RUN/vae into RUN/latents.pt."""
    from diffusers import AutoencoderKL

    log = make_logger(run / "encode.log")
    vae = AutoencoderKL.from_pretrained(run / "vae", local_files_only=True).eval()
    data = encode_world(vae, seed, count, log=log)
    data.save(run / "latents.pt")
    log(f"encoded {len(data.captions)} scenes, latent std {float(data.latents.std()):.3f}")
    return run / "latents.pt"


class Ema:
    """Exponential moving average of a module's parameters (kept in a frozen copy)."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        """Blend in the current weights (warm-up: decay grows with the step count)."""
        d = min(self.decay, (1 + step) / (10 + step))
        for ema_p, p in zip(self.model.parameters(), module.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - d)


def min_snr_weights(scheduler: Any, timesteps: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-gamma loss weights for epsilon prediction: min(SNR, gamma) / SNR."""
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    return torch.clamp(snr, max=gamma) / snr


def diffusion_loss(unet: Any, scheduler: Any, latents: torch.Tensor, embeds: torch.Tensor,
                   gen: torch.Generator, extra: Callable[[torch.Tensor, torch.Tensor], dict[str, Any]] | None = None,
                   ) -> torch.Tensor:
    """Min-SNR-weighted epsilon MSE at uniformly drawn timesteps.

    `extra(noisy, t)` gives more UNet keyword arguments computed from the noisy input (a ControlNet's
    residuals), so every stage draws noise and timesteps, and weighs the loss, the same way.
    """
    noise = torch.randn(latents.shape, generator=gen)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=gen)
    noisy = scheduler.add_noise(latents, noise, t)
    kwargs = extra(noisy, t) if extra is not None else {}
    pred = unet(noisy, t, encoder_hidden_states=embeds, **kwargs).sample
    per_sample = (pred - noise).pow(2).mean(dim=(1, 2, 3))
    return (per_sample * min_snr_weights(scheduler, t)).mean()


def drop_captions(values: torch.Tensor, empty: torch.Tensor, pick: np.random.Generator, drop: float) -> torch.Tensor:
    """A copy of `values` (token ids or embeddings, a row per sample) with a `drop` fraction of the rows set
    to the empty caption's: classifier-free guidance asks the model for the empty prompt too."""
    out = values.clone()
    out[torch.from_numpy(pick.random(len(values)) < drop)] = empty
    return out


def current_vae(run: Path) -> Any:
    """RUN/vae as it is on disk now (the decoder stage may sharpen it while the UNet trains)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(run / "vae", local_files_only=True).eval()


def train_base(run: Path, seed: int = 1, minutes: float = 35.0, steps: int = 1_000_000, batch: int = 64,
               lr: float = 6e-4, drop: float = 0.1, save_every: int = 400, resume: bool = False) -> Path:
    """Train UNet + text encoder on RUN/latents.pt; saves the EMA pipeline to RUN/tinyworld.

    resume=True continues from RUN/tinyworld (the saved EMA weights) with a cosine decay of the
    learning rate over the budget, instead of starting from the seed's random weights.
    """

    log = make_logger(run / "base.log")
    data = LatentSet.load(run / "latents.pt")
    tokenizer = make_tokenizer()
    ids = tokenize(tokenizer, data.captions)
    empty = tokenize(tokenizer, [""])[0]
    if resume:
        from training.train_control import load_base

        unet, text_encoder, _ = load_base(run)
        unet, text_encoder = unet.requires_grad_(True).train(), text_encoder.requires_grad_(True).train()
    else:
        unet, text_encoder = new_unet(seed).train(), new_text_encoder(seed, tokenizer).train()
    ema_unet, ema_text = Ema(unet, 0.999), Ema(text_encoder, 0.999)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    deadline = Deadline(minutes, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 200, deadline, decay=resume))
    scheduler = noise_scheduler()
    gen = torch.Generator().manual_seed(seed + 100 if resume else seed)
    pick = np.random.default_rng(seed + 100 if resume else seed)
    log(f"base: {len(data.captions)} latents, batch {batch}, lr {lr}{', resumed' if resume else ''}")

    def save() -> None:
        save_pipeline(run / "tinyworld", ema_unet.model, current_vae(run), ema_text.model, tokenizer)

    step = 0
    progress = Progress("base", log, save, save_every)
    while not deadline.done(step):
        idx = torch.from_numpy(pick.integers(0, len(data.captions), size=batch))
        embeds = text_encoder(drop_captions(ids[idx], empty, pick, drop))[0]
        loss = diffusion_loss(unet, scheduler, data.latents[idx], embeds, gen)
        optimizer_step(loss, opt, params, sched)
        ema_unet.update(unet, step)
        ema_text.update(text_encoder, step)
        step += 1
        progress.after(step, float(loss.detach()))
    save()
    log(f"base done: {step} steps")
    return run / "tinyworld"
