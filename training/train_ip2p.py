"""A tiny InstructPix2Pix for the demo world: tinyworld's UNet taught to follow edit instructions.

Data: pairs drawn from the world's object scenes (never a held-out combination): a source scene, an
instruction from a three-rule grammar, and the edited scene -- the same scene with one attribute
changed (`dataclasses.replace`) and drawn again with `draw_scene`, so nothing else moves:
- "make it a <colour> <shape>"         (the object's colour),
- "turn the <shape> into a <shape>"    (the object's shape),
- "give it a <colour> background"      (the background).
The colour comes before the word it belongs to, as in the world's captions ("a red circle", "blue
background"): the frozen text encoder is causal, so "background" and the shape word carry their colour
the way the UNet learned to read it. With the colour after its noun ("make the background red", the
first grammar) the model mostly painted the colour on the wrong thing (logs/ip2p_eval*.json).
"make", "turn", "give", "into" are not words of the project's tokenizer; they tokenize down to bytes,
as any other text does, and the frozen text encoder still tells the rules apart.

Model (the InstructPix2Pix paper's recipe): builtin:tinyworld's trained UNet with conv_in widened to 8
input channels, the 4 new channels' weights zero, so at step 0 it is exactly tinyworld (which ignores
the picture). The text encoder, VAE, tokenizer and scheduler are tinyworld's, frozen. The picture's
latents are the VAE posterior's mode *unscaled*, as StableDiffusionInstructPix2PixPipeline's
`prepare_image_latents` computes them; the target's are the mean times the scaling factor (what the
sampler denoises). Both are encoded once, before training (the VAE is the slow part). Loss: the
project's epsilon loss (`train_base.diffusion_loss`). Classifier-free guidance for both conditions as
the paper: 5% of samples lose the instruction, 5% the picture (zero latents, the pipeline's
unconditional picture), 5% both. An EMA of the weights is what is saved.

`python -m training.train_ip2p --run training/runs/ip2p --minutes 20 --threads 1`
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nodegraph_diffusion.paths import BUILTIN_DIR

from training.common import Deadline, Progress, lr_factor, make_logger, optimizer_step, setup_threads
from training.data import to_tensor
from training.models import noise_scheduler, tokenize
from training.train_base import Ema, diffusion_loss
from training.world import COLORS, SHAPES, Scene, _too_close, caption_for, draw_scene, held_out, sample_scene

TRAIN_SEED = 21  # the pairs' world (any seed: held-out combinations are skipped, not the seed's scenes)
EDITS: tuple[str, ...] = ("color", "shape", "background")
DROP = 0.05  # each of: text only, picture only, both


@dataclasses.dataclass(frozen=True)
class EditPair:
    """One training or evaluation example: the edit, its target value, and both scenes."""

    source: Scene
    edited: Scene
    instruction: str
    edit: str  # "color", "shape" or "background"
    target: str


def edit_scene(scene: Scene, edit: str, rng: np.random.Generator) -> EditPair:
    """`scene` (an object scene) with one attribute changed to a random other value, and the instruction."""
    obj = scene.obj
    assert obj is not None, "edits are drawn from object scenes"
    if edit == "color":
        target = _choice(rng, [c for c in COLORS if c != obj.color and not _too_close(c, scene.background)])
        new_obj, background = dataclasses.replace(obj, color=target), scene.background
        instruction = f"make it a {target} {obj.shape}"
    elif edit == "shape":
        target = _choice(rng, [s for s in SHAPES if s != obj.shape])
        new_obj, background = dataclasses.replace(obj, shape=target), scene.background
        instruction = f"turn the {obj.shape} into a {target}"
    elif edit == "background":
        target = _choice(rng, [c for c in COLORS if c != scene.background and not _too_close(c, obj.color)])
        new_obj, background = obj, target
        instruction = f"give it a {target} background"
    else:
        raise ValueError(f"unknown edit {edit!r}; one of {EDITS}")
    caption = caption_for(background, new_obj, None, False)
    edited = dataclasses.replace(scene, background=background, obj=new_obj, caption=caption)
    return EditPair(scene, edited, instruction, edit, target)


def _choice(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def edit_pairs(seed: int, count: int, held: bool = False) -> list[EditPair]:
    """`count` pairs from the object scenes of world `seed`: held=False never uses a held-out combination,
    as source or as edit (training); held=True edits only held-out scenes (evaluation). Edits cycle."""
    rng = np.random.default_rng(seed + 5)
    pairs: list[EditPair] = []
    index = 0
    while len(pairs) < count:
        scene = sample_scene(seed, index)
        index += 1
        if scene.obj is None or held_out(scene) != held:
            continue
        pair = edit_scene(scene, EDITS[len(pairs) % len(EDITS)], rng)
        if held or not held_out(pair.edited):  # training never sees a held-out combination, even as a target
            pairs.append(pair)
    return pairs


@torch.no_grad()
def encode_pairs(vae: Any, pairs: list[EditPair], batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(picture latents: posterior mode, unscaled; target latents: mean x scaling factor) of `pairs`."""
    pictures, targets = [], []
    factor = float(vae.config.scaling_factor)
    for i in range(0, len(pairs), batch):
        chunk = pairs[i:i + batch]
        sources = to_tensor(np.stack([draw_scene(p.source) for p in chunk]))
        edited = to_tensor(np.stack([draw_scene(p.edited) for p in chunk]))
        pictures.append(vae.encode(sources).latent_dist.mode())
        targets.append(vae.encode(edited).latent_dist.mean * factor)
    return torch.cat(pictures), torch.cat(targets)


def widened_unet(base: Path) -> Any:
    """tinyworld's UNet with conv_in reading 8 channels: the first 4 its trained weights, the rest zero."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", local_files_only=True)
    old = unet.conv_in
    new = torch.nn.Conv2d(8, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :4].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=8)
    return unet


class PictureConditioned(torch.nn.Module):
    """The UNet as `diffusion_loss` calls it (noisy latents only), with the picture's latents appended."""

    def __init__(self, unet: Any, pictures: torch.Tensor) -> None:
        super().__init__()
        self.unet, self.pictures = unet, pictures

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor) -> Any:
        """One UNet call on [noisy, picture] channels."""
        inputs = torch.cat([noisy, self.pictures], dim=1)
        return self.unet(inputs, t, encoder_hidden_states=encoder_hidden_states)


def dropped(embeds: torch.Tensor, pictures: torch.Tensor, targets: torch.Tensor, empty: torch.Tensor,
            pick: np.random.Generator, text_drop: float = DROP, factor: float | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Copies with `text_drop` of the rows losing the instruction only, DROP the picture only, DROP both.

    factor: when given, a row that keeps its picture but loses its instruction is asked for the picture
    itself (its latents times the scaling factor: the posterior's mode is its mean) instead of the edit:
    "no instruction, no change", which makes the pipeline's image-only prediction -- the baseline its
    text guidance pushes away from -- the unchanged picture."""
    r = torch.from_numpy(pick.random(len(embeds)))
    text_only, both = r < text_drop, (r >= text_drop) & (r < text_drop + DROP)
    picture_only = (r >= text_drop + DROP) & (r < text_drop + 2 * DROP)
    embeds, pictures, targets = embeds.clone(), pictures.clone(), targets.clone()
    embeds[text_only | both] = empty
    if factor is not None:
        targets[text_only] = pictures[text_only] * factor
    pictures[picture_only | both] = 0.0
    return embeds, pictures, targets


def save_folder(out: Path, unet: Any, template: Path = BUILTIN_DIR / "tinyworld-ip2p") -> Path:
    """`out` laid out as builtin:tinyworld-ip2p (its text encoder, VAE, tokenizer, scheduler) with `unet`."""
    if not out.exists():
        shutil.copytree(template, out, ignore=shutil.ignore_patterns("unet", "training.json"))
    unet.save_pretrained(out / "unet", safe_serialization=True)
    return out


def train_ip2p(run: Path, count: int = 3000, minutes: float = 20.0, steps: int = 1_000_000, batch: int = 32,
               lr: float = 3e-4, seed: int = 1, save_every: int = 500, init: Path | None = None,
               conv_in_lr: float = 1.0, out_name: str = "tinyworld-ip2p", text_drop: float = DROP,
               unchanged_without_text: bool = False, text_lr: float = 0.0) -> Path:
    """Train on `count` pairs for `minutes`; writes RUN/OUT_NAME (the EMA UNet) and RUN/ip2p.log.

    init: continue from that folder's 8-channel UNet instead of widening tinyworld's; conv_in_lr: a
    factor on conv_in's learning rate (the picture's weights start at zero and learn slowest);
    text_drop / unchanged_without_text: see `dropped`; text_lr: when above 0, the text encoder trains
    too, at that factor of `lr` (tinyworld's encoder never read an instruction), and is saved with the
    UNet (from `init`'s folder when it has one)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    base = BUILTIN_DIR / "tinyworld"
    log = make_logger(run / "ip2p.log")
    cache = run / f"pairs-{count}.pt"
    pairs = edit_pairs(TRAIN_SEED, count)
    if cache.exists():
        stored = torch.load(cache, weights_only=True)
        pictures, targets = stored["pictures"], stored["targets"]
    else:
        vae = AutoencoderKL.from_pretrained(base, subfolder="vae", local_files_only=True).eval()
        pictures, targets = encode_pairs(vae, pairs)
        torch.save({"pictures": pictures, "targets": targets}, cache)
    log(f"{len(pairs)} pairs: picture std {float(pictures.std()):.3f}, target std {float(targets.std()):.3f}")
    factor = float(json.loads((base / "vae" / "config.json").read_text())["scaling_factor"])
    text_from = init if init is not None and (init / "text_encoder").is_dir() and text_lr > 0 else base
    text_encoder = CLIPTextModel.from_pretrained(text_from, subfolder="text_encoder",
                                                 local_files_only=True).eval()
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    ids, empty_ids = tokenize(tokenizer, [p.instruction for p in pairs]), tokenize(tokenizer, [""])
    with torch.no_grad():
        embeds = torch.cat([text_encoder(ids[i:i + 256])[0] for i in range(0, len(pairs), 256)])
        empty = text_encoder(empty_ids)[0][0]
    torch.manual_seed(seed)
    if init is not None:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(init, subfolder="unet", local_files_only=True).train()
    else:
        unet = widened_unet(base).train()
    ema = Ema(unet, 0.998)
    first = list(unet.conv_in.parameters())
    rest = [q for q in unet.parameters() if all(q is not f for f in first)]
    groups = [{"params": rest}, {"params": first, "lr": lr * conv_in_lr}]
    text_ema = None
    if text_lr > 0:
        text_encoder.train()
        text_ema = Ema(text_encoder, 0.998)
        groups.append({"params": list(text_encoder.parameters()), "lr": lr * text_lr})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=1e-2)
    trained = [q for g in groups for q in g["params"]]
    deadline = Deadline(minutes, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 100, deadline, decay=True))
    scheduler = noise_scheduler()
    gen = torch.Generator().manual_seed(seed)
    pick = np.random.default_rng(seed + 1)
    out = run / out_name

    def save() -> None:
        save_folder(out, ema.model)
        if text_ema is not None:
            text_ema.model.save_pretrained(out / "text_encoder", safe_serialization=True)

    step = 0
    progress = Progress("ip2p", log, save, save_every)
    while not deadline.done(step):
        idx = torch.from_numpy(pick.integers(0, len(pairs), size=batch))
        if text_ema is not None:
            rows, none = text_encoder(ids[idx])[0], text_encoder(empty_ids)[0][0]
        else:
            rows, none = embeds[idx], empty
        emb, pics, tgts = dropped(rows, pictures[idx], targets[idx], none, pick, text_drop,
                                  factor if unchanged_without_text else None)
        loss = diffusion_loss(PictureConditioned(unet, pics), scheduler, tgts, emb, gen)
        optimizer_step(loss, opt, trained, sched)
        ema.update(unet, step)
        if text_ema is not None:
            text_ema.update(text_encoder, step)
        step += 1
        progress.after(step, float(loss.detach()))
    save()
    log(f"ip2p done: {step} steps")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: train (the default) into RUN."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("training/runs/ip2p"))
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init", type=Path, help="continue from this folder's UNet")
    parser.add_argument("--conv-in-lr", type=float, default=1.0, help="factor on conv_in's learning rate")
    parser.add_argument("--out", default="tinyworld-ip2p", help="output folder name under RUN")
    parser.add_argument("--text-drop", type=float, default=DROP, help="share of rows without instruction")
    parser.add_argument("--unchanged-without-text", action="store_true",
                        help="rows without instruction (picture kept) are asked for the picture itself")
    parser.add_argument("--text-lr", type=float, default=0.0,
                        help="train the text encoder too, at this factor of --lr (0: frozen)")
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    args.run.mkdir(parents=True, exist_ok=True)
    train_ip2p(args.run, args.count, args.minutes, args.steps, args.batch, args.lr, init=args.init,
               conv_in_lr=args.conv_in_lr, out_name=args.out, text_drop=args.text_drop,
               unchanged_without_text=args.unchanged_without_text, text_lr=args.text_lr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
