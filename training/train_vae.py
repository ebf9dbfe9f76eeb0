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

from training.common import Deadline, make_logger
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
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        running = l1 if step == 0 else 0.98 * running + 0.02 * l1
        step += 1
        if step % 50 == 0:
            log(f"vae step {step} loss {float(loss):.4f} l1(ema) {running:.4f}")
        if step % save_every == 0:
            vae.eval()
            vae.save_pretrained(out / "vae", safe_serialization=True)
            vae.train()
    vae.eval()
    factor = set_scaling_factor(vae, images[:1024])
    vae.save_pretrained(out / "vae", safe_serialization=True)
    log(f"vae done: {step} steps, scaling_factor {factor:.4f}")
    return out / "vae"
