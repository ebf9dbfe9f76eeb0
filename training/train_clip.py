"""Train the tiny demo CLIP (transformers `CLIPModel`, own tinyworld tokenizer) on tinyworld scenes.

Contrastive (CLIP's symmetric InfoNCE over the batch) plus attribute-swapped hard negatives: every
image also has to rank its own caption above `--negatives` swapped variants of it (mm_data.py), which
is what the evaluation asks (held-out scenes, top-1 among the swapped variants). Held-out combinations
(world.held_out) are never trained on. Images go in as the folder's CLIPProcessor makes them (64 px,
no resize: checked against the processor at start), so the trained folder scores what it learnt.

`python -m training.train_clip --run training/runs/clip --minutes 25`
Writes RUN/tinyclip (CLIPModel + CLIPProcessor, checkpointed every `--save-every` steps) and RUN/clip.log.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.common import DEFAULT_RUNS, make_logger, setup_threads, train_transformers_model
from training.mm_data import (EVAL_SEED, TRAIN_SEED, Candidate, render, retrieval_table, swapped_captions,
                              world_scenes)

IMAGE_SIZE = 64
TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 77}
VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
          "image_size": IMAGE_SIZE, "patch_size": 8}
PROJECTION = 32


def build(seed: int = 0) -> tuple[Any, Any]:
    """A fresh tiny `CLIPModel` and its `CLIPProcessor` (the built-in tinyworld tokenizer)."""
    from nodegraph_diffusion.paths import BUILTIN_DIR
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(BUILTIN_DIR / "tinyworld" / "tokenizer")
    text = {**TEXT, "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    config = CLIPConfig(text_config=text, vision_config=VISION, projection_dim=PROJECTION)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    images = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                   crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return model, CLIPProcessor(image_processor=images, tokenizer=tokenizer)


class Pixels:
    """uint8 drawings -> the processor's pixel_values, without PIL per step (64 px in = 64 px out, so the
    processor only rescales and normalises; `check` proves it on real drawings)."""

    def __init__(self, processor: Any) -> None:
        ip = processor.image_processor
        self.mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
        self.processor = processor

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    def check(self, images: np.ndarray) -> float:
        """Max abs difference to what the processor makes of the same images (PIL)."""
        from PIL import Image as PILImage

        pil = [PILImage.fromarray(a) for a in images]
        ref = self.processor(images=pil, return_tensors="pt")["pixel_values"]
        return float((ref - self(images)).abs().max())


class Tokens:
    """Token ids per caption, cached (the tokenizer costs ~1.5 ms a caption; the world has a few
    thousand distinct ones)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.cache = tokenizer, {}  # type: ignore[var-annotated]

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        new = sorted({t for t in texts if t not in self.cache})
        if new:
            for t, ids in zip(new, self.tokenizer(new)["input_ids"], strict=True):
                self.cache[t] = ids
        rows = [self.cache[t] for t in texts]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return ids, mask


def embed(model: Any, pixels: torch.Tensor | None = None, ids: torch.Tensor | None = None,
          mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised image or text embeddings, as CLIPModel's forward computes them."""
    if pixels is not None:
        out = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    else:
        out = model.text_projection(model.text_model(input_ids=ids, attention_mask=mask).pooler_output)
    return out / out.norm(dim=-1, keepdim=True)


def pick_negatives(variants: dict[str, list[str]], k: int, rng: random.Random) -> list[str]:
    """`k` swapped captions: one of each kind first (shuffled), then random ones of any kind."""
    kinds = list(variants)
    rng.shuffle(kinds)
    out = [rng.choice(variants[kind]) for kind in kinds][:k]
    pool = [t for v in variants.values() for t in v]
    while len(out) < k:
        out.append(rng.choice(pool))
    return out


def loss_fn(model: Any, pixels: torch.Tensor, pos: tuple[torch.Tensor, torch.Tensor],
            neg: tuple[torch.Tensor, torch.Tensor], k: int) -> torch.Tensor:
    """Symmetric InfoNCE over the batch + each image against its own `k` hard negatives."""
    img = embed(model, pixels)
    txt = embed(model, ids=pos[0], mask=pos[1])
    hard = embed(model, ids=neg[0], mask=neg[1]).view(img.shape[0], k, -1)
    scale = model.logit_scale.exp().clamp(max=100.0)
    logits = scale * img @ txt.T  # (B, B)
    hard_logits = scale * torch.einsum("bd,bkd->bk", img, hard)
    target = torch.arange(img.shape[0])
    i2t = F.cross_entropy(torch.cat([logits, hard_logits], dim=1), target)
    t2i = F.cross_entropy(logits.T, target)
    return 0.5 * (i2t + t2i)


@torch.no_grad()
def quick_eval(model: Any, pixels: torch.Tensor, items: list[Candidate], tokens: Tokens) -> dict[str, Any]:
    """Held-out retrieval table on preprocessed pixels (the same maths as CLIPModel's logits)."""
    model.eval()
    img = embed(model, pixels)
    model.train()

    def score(i: int, texts: list[str]) -> list[float]:
        with torch.no_grad():
            t = embed(model, ids=tokens(texts)[0], mask=tokens(texts)[1])
        return (t @ img[i]).tolist()

    return retrieval_table(score, items)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=DEFAULT_RUNS / "clip")
    p.add_argument("--minutes", type=float, default=25.0)
    p.add_argument("--steps", type=int, default=100000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--negatives", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pool", type=int, default=20000, help="training scenes (non-held-out, world seed 1)")
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, help="continue from this saved folder (a new cosine cycle)")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    log = make_logger(args.run / "clip.log")
    model, processor = build(args.seed)
    if args.init is not None:
        from transformers import CLIPModel

        model = CLIPModel.from_pretrained(args.init, local_files_only=True)
    log(f"CLIPModel {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M params; {vars(args)}")
    scenes, _ = world_scenes(TRAIN_SEED, args.pool, held=False)
    images = render(scenes)
    variants = [swapped_captions(s, skip_held_out=True) for s in scenes]
    pixels_of, tokens = Pixels(processor), Tokens(processor.tokenizer)
    log(f"pool of {len(scenes)} scenes drawn; processor check max abs {pixels_of.check(images[:8]):.2e}")
    eval_scenes, _ = world_scenes(EVAL_SEED, 120, held=True)
    eval_pixels = pixels_of(render(eval_scenes))
    eval_items = [Candidate(s.caption, swapped_captions(s)) for s in eval_scenes]
    out = args.run / "tinyclip"

    def save() -> None:
        model.save_pretrained(out)
        processor.save_pretrained(out)

    def batch_loss(rng: random.Random) -> torch.Tensor:
        batch = rng.sample(range(len(scenes)), args.batch)
        pos = tokens([scenes[i].caption for i in batch])
        neg = tokens([t for i in batch for t in pick_negatives(variants[i], args.negatives, rng)])
        return loss_fn(model, pixels_of(images[batch]), pos, neg, args.negatives)

    step = train_transformers_model(model, save, log, "clip", batch_loss,
                                    lambda: quick_eval(model, eval_pixels, eval_items, tokens), lr=args.lr,
                                    minutes=args.minutes, steps=args.steps, save_every=args.save_every,
                                    seed=args.seed, check_every=args.eval_every)
    log(f"done: {step} steps, saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
