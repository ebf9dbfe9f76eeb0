"""Measure the tiny demo CLIP and captioner on held-out tinyworld scenes (combinations never trained on).

- CLIP: for every scene, CLIPModel's logits_per_image (the folder's own CLIPProcessor on the drawn
  PNG-exact image and the texts, as clip.score computes it) of the true caption and of each kind of
  attribute-swapped variant (mm_data.py); top-1 = the true caption scores above all variants of that
  kind ("all": above every variant of the scene at once). Chance is 1 / (1 + number of variants).
- Captioner: greedy `generate()` (as caption.generate calls it) on each scene, parsed with the
  world's grammar; accuracy per attribute (colour, shape, position, size, background for objects;
  shirt, background for figures), and how often the caption is in the grammar at all.

`python -m training.eval_multimodal --clip FOLDER --caption FOLDER [--n 300] [--json out.json]`
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.mm_data import (EVAL_SEED, Candidate, format_table, render, retrieval_table, swapped_captions,
                              world_scenes)
from training.world import COLORS, POSITIONS, SHAPES, SIZES, Scene

_C = "|".join(COLORS)
OBJECT = re.compile(rf"a (?P<size>{'|'.join(SIZES)}) (?P<color>{_C}) (?P<shape>{'|'.join(SHAPES)}) "
                    rf"(?P<position>{'|'.join(POSITIONS)}) ?, (?P<background>{_C}) background")
FIGURE = re.compile(rf"a person in a (?P<shirt>{_C}) shirt( and (?P<pants>{_C}) pants)? ?, "
                    rf"(?P<background>{_C}) background")
OBJECT_FIELDS = ("color", "shape", "position", "size", "background")
FIGURE_FIELDS = ("shirt", "background")
# chance of guessing each attribute uniformly (object colour and shirt avoid the background's colour)
CHANCE = {"color": 1 / 9, "shape": 1 / 3, "position": 1 / 5, "size": 1 / 2, "background": 1 / 10,
          "shirt": 1 / 9}


def parse(caption: str) -> dict[str, str]:
    """The grammar's fields of a caption (BERT decoding may leave a space before the comma), {} if outside."""
    text = caption.strip().lower()
    match = OBJECT.fullmatch(text) or FIGURE.fullmatch(text)
    return {k: v for k, v in match.groupdict().items() if v is not None} if match else {}


def truth(scene: Scene) -> dict[str, str]:
    """The scene's attributes under the parser's field names."""
    if scene.obj is not None:
        o = scene.obj
        return {"color": o.color, "shape": o.shape, "position": o.position, "size": o.size,
                "background": scene.background}
    assert scene.figure is not None
    return {"shirt": scene.figure.shirt, "background": scene.background}


def caption_table(captions: Sequence[str], scenes: Sequence[Scene]) -> dict[str, dict[str, float]]:
    """Per-attribute accuracy of generated captions: {field: {"accuracy", "chance", "n"}}, plus
    "grammatical" (the caption parses) and "exact" (the caption equals the true one)."""
    hits: dict[str, list[float]] = {}
    for caption, scene in zip(captions, scenes, strict=True):
        got, want = parse(caption), truth(scene)
        prefix = "" if scene.obj is not None else "figure "
        for field, value in want.items():
            hits.setdefault(prefix + field, []).append(float(got.get(field) == value))
        hits.setdefault("grammatical", []).append(float(bool(got)))
        hits.setdefault("exact", []).append(float(caption.replace(" ,", ",").strip() == scene.caption))
    order = [*OBJECT_FIELDS, *(f"figure {f}" for f in FIGURE_FIELDS), "grammatical", "exact"]
    return {k: {"accuracy": float(np.mean(hits[k])), "chance": CHANCE.get(k.removeprefix("figure "), 0.0),
                "n": len(hits[k])} for k in order if k in hits}


def eval_clip(folder: Path, scenes: Sequence[Scene]) -> dict[str, dict[str, float]]:
    """Retrieval table of the CLIP folder on the scenes, through CLIPModel's forward and CLIPProcessor."""
    from PIL import Image as PILImage
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    images = [PILImage.fromarray(a) for a in render(scenes)]
    items = [Candidate(s.caption, swapped_captions(s)) for s in scenes]

    def score(i: int, texts: list[str]) -> list[float]:
        inputs = processor(text=texts, images=[images[i]], return_tensors="pt", padding=True)
        with torch.no_grad():
            return model(**inputs).logits_per_image[0].tolist()

    return retrieval_table(score, items)


def eval_caption(folder: Path, scenes: Sequence[Scene], batch: int = 50) -> tuple[dict[str, Any], list[str]]:
    """Attribute table of the captioner folder's greedy captions of the scenes (and the captions)."""
    from PIL import Image as PILImage
    from transformers import AutoProcessor, BlipForConditionalGeneration

    model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    drawings = render(scenes)
    captions: list[str] = []
    for start in range(0, len(scenes), batch):
        pil = [PILImage.fromarray(a) for a in drawings[start:start + batch]]
        inputs = processor(images=pil, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=30, num_beams=1, do_sample=False)
        captions += [processor.decode(o, skip_special_tokens=True).strip() for o in out]
    return caption_table(captions, scenes), captions


def format_caption_table(table: dict[str, dict[str, float]], title: str) -> str:
    """The captioner table as text lines."""
    lines = [title, f"{'attribute':<20} {'acc':>6} {'chance':>7} {'n':>5}"]
    for kind, row in table.items():
        lines.append(f"{kind:<20} {row['accuracy']:>6.3f} {row['chance']:>7.3f} {int(row['n']):>5}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", type=Path)
    p.add_argument("--caption", type=Path)
    p.add_argument("--n", type=int, default=300, help="held-out scenes (world seed 9001)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    scenes, _ = world_scenes(EVAL_SEED, args.n, held=True)
    report: dict[str, Any] = {"n": args.n, "seed": EVAL_SEED}
    if args.clip is not None:
        report["clip"] = eval_clip(args.clip, scenes)
        print(format_table(report["clip"], f"CLIP {args.clip}: held-out top-1 among swapped captions"))
    if args.caption is not None:
        report["caption"], captions = eval_caption(args.caption, scenes)
        report["caption_examples"] = [[s.caption, c] for s, c in zip(scenes[:8], captions[:8], strict=True)]
        print(format_caption_table(report["caption"], f"captioner {args.caption}: held-out greedy captions"))
        for want, got in report["caption_examples"]:
            print(f"  {want!r} -> {got!r}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
