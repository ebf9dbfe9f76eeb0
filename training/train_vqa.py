"""Train the tiny demo question answerer (transformers `BlipForQuestionAnswering`, as builtin:tinyblip-vqa)
on tinyworld scenes and the questions of vqa_data.py.

It starts from the trained captioner (builtin:tinyblip), as BLIP's VQA model starts from its
pre-trained one: the vision encoder and the answer decoder are the captioner's, the question encoder
is the captioner's decoder body (same layers, read bidirectionally). Words the captioner never had
("where", "are") get fresh embedding rows. Loss: the answer decoder's teacher-forced loss on
[DEC] answer [SEP], as `BlipForQuestionAnswering.forward` computes it, padding left out. Held-out
combinations are never trained on; the evaluation asks held-out scenes.

`python -m training.train_vqa --run training/runs/vqa --minutes 30`
Writes RUN/tinyblip-vqa (model + BlipProcessor, checkpointed as it goes) and RUN/vqa.log;
`python -m training.train_vqa --eval FOLDER [--n 300] [--json out.json]` prints the table.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from training.common import DEFAULT_RUNS, make_logger, print_report, setup_threads, train_transformers_model
from training.mm_data import EVAL_SEED, TRAIN_SEED, render, world_scenes
from training.train_caption import VISION, build
from training.train_clip import Pixels, Tokens
from training.vqa_data import answer_table, questions
from training.world import Scene

QUESTION_WORDS = ("where", "are")  # in the questions, not in the captioner's vocabulary


def build_vqa(captioner: Path | None, seed: int = 0) -> tuple[Any, Any]:
    """A tiny BlipForQuestionAnswering and its processor, initialised from `captioner` when given."""
    from transformers import BlipForConditionalGeneration, BlipForQuestionAnswering

    caption_model, processor = build(seed, QUESTION_WORDS)
    model = BlipForQuestionAnswering(caption_model.config)
    if captioner is not None:
        trained = BlipForConditionalGeneration.from_pretrained(captioner, local_files_only=True).state_dict()
        decoder_body = {k.removeprefix("text_decoder.bert."): v for k, v in trained.items()
                        if k.startswith("text_decoder.bert.")}
        copy_rows(model.vision_model, {k.removeprefix("vision_model."): v for k, v in trained.items()
                                       if k.startswith("vision_model.")})
        copy_rows(model.text_decoder, {k.removeprefix("text_decoder."): v for k, v in trained.items()
                                       if k.startswith("text_decoder.")})
        copy_rows(model.text_encoder, decoder_body)
    assert VISION["image_size"] == model.config.vision_config.image_size
    return model, processor


@torch.no_grad()
def copy_rows(module: torch.nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Copy `source` into `module`'s tensors of the same name; a vocabulary-sized tensor that grew
    keeps its new rows (fresh words) and takes the old ones."""
    own = module.state_dict()
    for name, value in source.items():
        if name not in own:
            continue
        target = own[name]
        if target.shape == value.shape:
            target.copy_(value)
        elif target.shape[1:] == value.shape[1:] and target.shape[0] > value.shape[0]:
            target[:value.shape[0]].copy_(value)
        else:
            raise ValueError(f"{name}: {tuple(value.shape)} does not fit {tuple(target.shape)}")


def answer_loss(model: Any, pixels: torch.Tensor, q: tuple[torch.Tensor, torch.Tensor],
                a: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The answer decoder's loss on [DEC] answer [SEP] given the question (padding ignored)."""
    ids, mask = a[0].clone(), a[1]
    ids[:, 0] = model.decoder_start_token_id
    labels = ids.masked_fill(mask == 0, -100)
    return model(input_ids=q[0], attention_mask=q[1], pixel_values=pixels, decoder_input_ids=ids,
                 decoder_attention_mask=mask, labels=labels).loss


def eval_vqa(folder_or_model: Path | Any, scenes: Sequence[Scene], processor: Any = None,
             batch: int = 100) -> dict[str, dict[str, float]]:
    """Answer table of a folder (its own processor, on PIL images, as vqa.answer calls it) or a model."""
    from PIL import Image as PILImage
    from transformers import AutoProcessor, BlipForQuestionAnswering

    if isinstance(folder_or_model, Path):
        model = BlipForQuestionAnswering.from_pretrained(folder_or_model, local_files_only=True)
        processor = AutoProcessor.from_pretrained(folder_or_model, local_files_only=True)
    else:
        model = folder_or_model
    was_training = model.training
    model.eval()
    drawings = render(scenes)

    def answer(indices: list[int], texts: list[str]) -> list[str]:
        out: list[str] = []
        for start in range(0, len(indices), batch):
            pil = [PILImage.fromarray(drawings[i]) for i in indices[start:start + batch]]
            inputs = processor(images=pil, text=texts[start:start + batch], return_tensors="pt")
            with torch.no_grad():
                ids = model.generate(**inputs, max_new_tokens=10, num_beams=1, do_sample=False)
            out += [processor.decode(o, skip_special_tokens=True).strip() for o in ids]
        return out

    table = answer_table(answer, scenes)
    model.train(was_training)
    return table


def train(args: argparse.Namespace) -> Path:
    """The training loop; returns the saved folder."""
    log = make_logger(args.run / "vqa.log")
    model, processor = build_vqa(args.captioner, args.seed)
    log(f"BlipForQuestionAnswering {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M params; "
        f"{vars(args)}")
    scenes, _ = world_scenes(TRAIN_SEED, args.pool, held=False)
    images = render(scenes)
    asked = [(i, q) for i, s in enumerate(scenes) for q in questions(s)]
    pixels_of, tokens = Pixels(processor), Tokens(processor.tokenizer)
    log(f"{len(scenes)} scenes, {len(asked)} questions; processor check max abs "
        f"{pixels_of.check(images[:8]):.2e}")
    eval_scenes, _ = world_scenes(EVAL_SEED, 100, held=True)
    out = args.run / "tinyblip-vqa"

    def save() -> None:
        model.save_pretrained(out)
        processor.save_pretrained(out)

    def batch_loss(rng: random.Random) -> torch.Tensor:
        rows = [asked[i] for i in rng.sample(range(len(asked)), args.batch)]
        return answer_loss(model, pixels_of(images[[i for i, _ in rows]]), tokens([q.text for _, q in rows]),
                           tokens([q.answer for _, q in rows]))

    step = train_transformers_model(model, save, log, "vqa", batch_loss,
                                    lambda: eval_vqa(model, eval_scenes, processor), lr=args.lr,
                                    minutes=args.minutes, steps=args.steps, save_every=args.save_every,
                                    seed=args.seed, warmup=100)
    log(f"done: {step} steps, saved {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    from nodegraph_diffusion.paths import BUILTIN_DIR

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=DEFAULT_RUNS / "vqa")
    p.add_argument("--captioner", type=Path, default=BUILTIN_DIR / "tinyblip",
                   help="the trained captioner to start from")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--steps", type=int, default=100000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--pool", type=int, default=20000, help="training scenes (non-held-out, world seed 1)")
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval", type=Path, help="only evaluate this folder on --n held-out scenes")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    setup_threads(args.threads)
    if args.eval is None:
        train(args)
        return 0
    scenes, _ = world_scenes(EVAL_SEED, args.n, held=True)
    report = {"n": args.n, "seed": EVAL_SEED, "vqa": eval_vqa(args.eval, scenes)}
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
