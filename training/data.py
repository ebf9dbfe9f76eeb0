"""Data sets drawn from the world: image pools for the VAE, pre-encoded latents for the UNet.

Latents are encoded once (the VAE's posterior mean times its scaling factor) and kept with the token
ids and the index of their scene, so UNet and ControlNet steps never run the VAE, and a sample's
skeleton/edge map can be redrawn from `(seed, index)` when a control model needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.world import SIZE, Scene, draw_scene, draw_skeleton, edge_map, held_out, reframe, restyle, sample_scene


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [-1, 1] (the VAE's input range)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def control_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1] (a ControlNet's input range)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).contiguous()


def image_pool(seed: int, count: int, outlined_fraction: float = 0.0, size: int = SIZE) -> np.ndarray:
    """`count` scene images (uint8); a fraction drawn in the outlined style (so the VAE knows it)."""
    rng = np.random.default_rng(seed + 7)
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        scene = sample_scene(seed, i, size)
        if rng.random() < outlined_fraction:
            scene = restyle(scene, "outlined")
        out[i] = draw_scene(scene, size)
    return out


@dataclass
class LatentSet:
    """Pre-encoded training data."""

    latents: torch.Tensor  # (N, 4, 8, 8), already times the VAE scaling factor
    captions: list[str]
    indices: torch.Tensor  # scene index in the world
    seed: int
    style: str = "plain"
    framing: str = "standard"  # "varied": figures reframed as real pose files frame them (world.reframe)

    def save(self, path: Path) -> None:
        """Store as a torch file (tensors and strings only; read back with weights_only=True)."""
        torch.save({"latents": self.latents, "captions": self.captions, "indices": self.indices,
                    "seed": self.seed, "style": self.style, "framing": self.framing}, path)

    @classmethod
    def load(cls, path: Path) -> LatentSet:
        """Read a set written by `save`."""
        data = torch.load(path, weights_only=True)
        return cls(data["latents"], list(data["captions"]), data["indices"], int(data["seed"]), data["style"],
                   data.get("framing", "standard"))


def scene_at(seed: int, index: int, framing: str = "standard") -> Scene:
    """Scene `index` of world `seed`, reframed when `framing` is "varied"."""
    scene = sample_scene(seed, index)
    return reframe(scene, seed, index) if framing == "varied" else scene


@torch.no_grad()
def encode_world(vae: Any, seed: int, count: int, style: str = "plain", batch: int = 64,
                 kinds: tuple[str, ...] = ("object", "figure"), log: Any = None,
                 framing: str = "standard") -> LatentSet:
    """Draw scenes `0..` of world `seed` (keeping only `kinds`, never a held-out combination) until
    `count`, and encode them with `vae`."""
    latents, captions, indices = [], [], []
    index = 0
    factor = float(vae.config.scaling_factor)
    while len(captions) < count:
        scenes, ids = [], []
        while len(scenes) < batch and len(captions) + len(scenes) < count:
            scene = scene_at(seed, index, framing)
            kind = "figure" if scene.figure is not None else "object"
            if kind in kinds and not held_out(scene):
                scenes.append(restyle(scene, style))
                ids.append(index)
            index += 1
        images = np.stack([draw_scene(s) for s in scenes])
        z = vae.encode(to_tensor(images)).latent_dist.mean * factor
        latents.append(z)
        captions += [s.caption for s in scenes]
        indices += ids
        if log is not None and len(captions) % (batch * 20) == 0:
            log(f"encoded {len(captions)}/{count}")
    return LatentSet(torch.cat(latents), captions, torch.tensor(indices), seed, style, framing)


def controls_for(seed: int, indices: list[int], kind: str, framing: str = "standard") -> np.ndarray:
    """The control images (skeletons or edge maps, uint8) of scenes `indices` of world `seed`."""
    out = []
    for i in indices:
        scene = scene_at(seed, i, framing)
        out.append(draw_skeleton(scene) if kind == "pose" else edge_map(draw_scene(scene)))
    return np.stack(out)
