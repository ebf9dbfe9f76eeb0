"""Does a CLIP rank tinyworld's *generations* by how right they are? (what graphs/best_of_n.yaml relies on)

For P held-out object captions, tinyworld draws N images each (seeds 1000 p + k, DPM++ 2M, 20 steps, at
the guidance `--cfg`); the world's scene scorer (`score_text`: background, colour, shape, position)
says how right each image is, and the CLIP folder scores each image against its caption (CLIPModel's
logits_per_image through its processor, as clip.score does). Figures:
- pairwise: over every pair of images of one caption where one is more right than the other, how often
  CLIP scores the more right one higher (ties half) -- 0.5 is a ranker that knows nothing;
- top1 / bottom1: how right CLIP's first and last pick are, beside `random` (the mean image) and
  `oracle` (the best image of each caption).

`python -m training.eval_clip_ranking [--clip FOLDER] [--prompts 40] [--cfg 1.0] [--json out.json]`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.common import print_report, setup_threads


def ranking_figures(clip: Path, prompts: int, per_prompt: int, cfg: float) -> dict[str, Any]:
    """The figures above for `prompts` captions x `per_prompt` images at guidance `cfg`."""
    from nodegraph_diffusion.paths import BUILTIN_DIR
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from training import evaluate
    from training.scoring import score_text

    pipe = evaluate._pipe(evaluate.Family.at(BUILTIN_DIR))
    model = CLIPModel.from_pretrained(clip, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(clip, local_files_only=True)
    top, bottom, mean, best, pairs = [], [], [], [], []
    for p, scene in enumerate(evaluate.eval_scenes("object", prompts)):
        images = evaluate.generate(pipe, [scene.caption] * per_prompt,
                                   [1000 * p + k for k in range(per_prompt)], guidance_scale=cfg)
        right = np.array([np.mean(list(score_text(im, scene).values())) for im in images])
        inputs = processor(text=[scene.caption], images=[Image.fromarray(a) for a in images],
                           return_tensors="pt", padding=True)
        with torch.no_grad():
            score = model(**inputs).logits_per_image[:, 0].numpy()
        top.append(right[int(np.argmax(score))])
        bottom.append(right[int(np.argmin(score))])
        mean.append(right.mean())
        best.append(right.max())
        pairs += [float(score[a] > score[b]) + 0.5 * float(score[a] == score[b])
                  for a in range(per_prompt) for b in range(per_prompt) if right[a] > right[b]]
    return {"clip": str(clip), "prompts": prompts, "images_each": per_prompt, "cfg": cfg,
            "pairwise": float(np.mean(pairs)) if pairs else None, "pairs": len(pairs),
            "top1": float(np.mean(top)), "bottom1": float(np.mean(bottom)), "random": float(np.mean(mean)),
            "oracle": float(np.mean(best))}


def main(argv: list[str] | None = None) -> int:
    from nodegraph_diffusion.paths import BUILTIN_DIR

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", type=Path, default=BUILTIN_DIR / "tinyclip")
    p.add_argument("--prompts", type=int, default=40)
    p.add_argument("--per-prompt", type=int, default=8)
    p.add_argument("--cfg", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    setup_threads(args.threads)
    figures = ranking_figures(args.clip, args.prompts, args.per_prompt, args.cfg)
    print_report(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
