"""Stage 1: the VAE (AutoencoderKL, downscale 8, 4 latent channels) on world images.

Loss: L1 + MSE on pixels, weighted 5x on the pixels that differ from the background (objects and
figures are a small part of each image and are what the evaluation looks at), plus a tiny KL term
(as SD's VAE: it keeps the latent smooth without blurring). At the end the scaling factor is set to
1 / std of the encoded latents, so the diffusion model sees unit-variance latents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.common import Deadline, Progress, lr_factor, make_logger, optimizer_step
from training.data import image_pool, to_tensor
from training.models import new_vae


def foreground_weight(x: torch.Tensor, boost: float = 4.0) -> torch.Tensor:
    """1 on background pixels, 1 + boost where the pixel differs from the image's corner colour."""
    corner = x[:, :, :1, :1]
    differs = ((x - corner).abs().sum(1, keepdim=True) > 0.15).float()
    return 1.0 + boost * differs


def vae_loss(vae: Any, x: torch.Tensor, kl_weight: float = 1e-6) -> tuple[torch.Tensor, float]:
    """Weighted reconstruction loss (+ KL); returns the loss and the plain L1 for the log."""
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample()).sample
    weight = foreground_weight(x)
    err = recon - x
    loss = (weight * (err.abs() + err.pow(2))).mean() + kl_weight * posterior.kl().mean()
    return loss, float(err.detach().abs().mean())


@torch.no_grad()
def set_scaling_factor(vae: Any, images: np.ndarray) -> float:
    """Scaling factor = 1 / std of the posterior means of `images` (SD's recipe for a new VAE)."""
    z = torch.cat([vae.encode(to_tensor(images[i:i + 64])).latent_dist.mean for i in range(0, len(images), 64)])
    factor = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=factor)
    return factor


def train_vae(out: Path, seed: int = 1, minutes: float = 14.0, steps: int = 100_000, batch: int = 16,
              lr: float = 5e-4, pool: int = 6000, save_every: int = 200) -> Path:
    """Train and save the VAE to `out/vae` (diffusers layout); the log goes to `out/vae.log`."""
    log = make_logger(out / "vae.log")
    images = image_pool(seed=1000 + seed, count=pool, outlined_fraction=0.15)
    log(f"pool of {len(images)} images drawn")
    vae = new_vae(seed).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    gen = np.random.default_rng(seed)
    deadline = Deadline(minutes, steps)
    step, running = 0, 0.0
    while not deadline.done(step):
        batch_idx = gen.integers(0, len(images), size=batch)
        x = to_tensor(images[batch_idx])
        if gen.random() < 0.5:
            x = x.flip(-1)
        loss, l1 = vae_loss(vae, x)
        optimizer_step(loss, opt, vae.parameters())
        running = l1 if step == 0 else 0.98 * running + 0.02 * l1
        step += 1
        if step % 50 == 0:
            log(f"vae step {step} loss {float(loss.detach()):.4f} l1(ema) {running:.4f}")
        if step % save_every == 0:
            vae.eval()
            vae.save_pretrained(out / "vae", safe_serialization=True)
            vae.train()
    vae.eval()
    factor = set_scaling_factor(vae, images[:1024])
    vae.save_pretrained(out / "vae", safe_serialization=True)
    log(f"vae done: {step} steps, scaling_factor {factor:.4f}")
    return out / "vae"


def train_decoder(run: Path, seed: int = 1, minutes: float = 12.0, steps: int = 100_000, batch: int = 16,
                  lr: float = 2e-4, plain: int = 8000, outlined: int = 2000, save_every: int = 200) -> Path:
    """Fine-tune the decoder of RUN/vae on the pre-encoded latents (RUN/latents*.pt), encoder frozen.

    The latent space stays exactly as it is (the UNet and ControlNets are trained on it), while the
    decoder learns to draw sharper: small squares came back with rounded corners (a 16 px object is two
    latent cells), which the shape scorer then took for circles. SD's "ft-MSE" VAE did the same.
    The result replaces RUN/vae and, when present, RUN/tinyworld/vae.
    """
    from diffusers import AutoencoderKL

    from training.data import LatentSet
    from training.world import draw_scene, restyle, sample_scene

    log = make_logger(run / "decoder.log")
    vae = AutoencoderKL.from_pretrained(run / "vae", local_files_only=True)
    factor = float(vae.config.scaling_factor)
    latents, images = [], []
    for name, count, style in (("latents.pt", plain, "plain"), ("latents-outlined.pt", outlined, "outlined")):
        if count and (run / name).exists():
            data = LatentSet.load(run / name)
            latents.append(data.latents[:count] / factor)
            images.append(np.stack([draw_scene(restyle(sample_scene(data.seed, int(i)), style))
                                    for i in data.indices[:count]]))
    z_all, x_all = torch.cat(latents), np.concatenate(images)
    log(f"decoder: {len(z_all)} latents with their drawings")
    vae.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in params:
        p.requires_grad_(True)
    vae.train()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    deadline = Deadline(minutes, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 50, deadline, decay=True))
    gen = np.random.default_rng(seed + 3)

    def save() -> None:
        vae.eval()
        for folder in (run / "vae", run / "tinyworld" / "vae"):
            if folder.parent.exists():
                vae.save_pretrained(folder, safe_serialization=True)
        vae.train()

    step = 0
    progress = Progress("decoder", log, save, save_every, smoothing=0.98)
    while not deadline.done(step):
        idx = gen.integers(0, len(z_all), size=batch)
        x = to_tensor(x_all[idx])
        recon = vae.decode(z_all[torch.from_numpy(idx)]).sample
        err = recon - x
        loss = (foreground_weight(x) * (err.abs() + err.pow(2))).mean()
        optimizer_step(loss, opt, params, sched)
        step += 1
        progress.after(step, float(err.detach().abs().mean()))  # logged: the plain L1
    save()
    log(f"decoder done: {step} steps")
    return run / "vae"
