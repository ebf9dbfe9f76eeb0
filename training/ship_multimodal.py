"""Install a trained tiny CLIP / captioner / question answerer as the built-in `tinyclip` / `tinyblip` /
`tinyblip-vqa` (files copied as saved).

A `training.json` next to the weights records where they came from, the held-out figures measured on
the test's small fixed set (40 scenes of eval_multimodal's world) and the floors the test holds the
shipped weights to: those figures less a margin, rounded down to 0.05 (only for attributes clearly
above chance). tests/training/test_training_multimodal.py reads it; without it the built-in is the
random model and the shipped-weights tests skip.

`python -m training.ship_multimodal --clip RUN/tinyclip --caption RUN/tinyblip --vqa RUN/tinyblip-vqa
[--margin 0.1]` (any of the three)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from training.eval_multimodal import eval_caption, eval_clip
from training.mm_data import EVAL_SEED, world_scenes
from training.train_vqa import eval_vqa

MARKER = "training.json"
TEST_SCENES = 40
CLIP_FLOORED = ("all", "color", "shape", "position", "background", "shirt")
CAPTION_FLOORED = ("color", "shape", "position", "background", "figure shirt", "grammatical")
VQA_FLOORED = ("all", "color", "shape", "position", "size", "background", "shirt", "pants")


def floors(table: dict[str, dict[str, float]], kinds: tuple[str, ...], margin: float) -> dict[str, float]:
    """measured - margin, rounded down to 0.05, for the kinds at least 0.15 above chance."""
    out = {}
    for kind in kinds:
        row = table.get(kind)
        if row is not None and row["accuracy"] >= row["chance"] + 0.15:
            out[kind] = math.floor((row["accuracy"] - margin) * 20 + 1e-9) / 20
    return out


def install(source: Path, name: str, record: dict[str, Any], builtin: Path | None = None) -> Path:
    """Replace built-in `name` with the folder `source` and write its training.json."""
    from nodegraph_diffusion.paths import BUILTIN_DIR

    target = (builtin or BUILTIN_DIR) / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    (target / MARKER).write_text(json.dumps(record, indent=1) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", type=Path)
    p.add_argument("--caption", type=Path)
    p.add_argument("--vqa", type=Path)
    p.add_argument("--margin", type=float, default=0.1)
    args = p.parse_args(argv)
    scenes, _ = world_scenes(EVAL_SEED, TEST_SCENES, held=True)
    common = {"trained_by": "training/train_clip.py, train_caption.py, train_vqa.py (issue 15)",
              "measured_on": f"{TEST_SCENES} held-out scenes of world {EVAL_SEED}"}
    if args.clip is not None:
        table = eval_clip(args.clip, scenes)
        record = {**common, "source": str(args.clip), "figures": table,
                  "floors": floors(table, CLIP_FLOORED, args.margin)}
        print(install(args.clip, "tinyclip", record), json.dumps(record["floors"]))
    if args.caption is not None:
        table, _ = eval_caption(args.caption, scenes)
        record = {**common, "source": str(args.caption), "figures": table,
                  "floors": floors(table, CAPTION_FLOORED, args.margin)}
        print(install(args.caption, "tinyblip", record), json.dumps(record["floors"]))
    if args.vqa is not None:
        table = eval_vqa(args.vqa, scenes)
        record = {**common, "source": str(args.vqa), "figures": table,
                  "floors": floors(table, VQA_FLOORED, args.margin)}
        print(install(args.vqa, "tinyblip-vqa", record), json.dumps(record["floors"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
