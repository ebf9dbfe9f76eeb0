"""Score a tiny InstructPix2Pix on held-out scenes with the world's own scoring (`analyse_object`).

For each held-out object scene of the evaluation world (a combination never trained on, as source or
target), one instruction of train_ip2p's grammar (edits cycle colour, shape, background), run through
StableDiffusionInstructPix2PixPipeline -- which graphs/instruct_edit.yaml equals to the last bit
(tests/diffusion/test_instruct_pix2pix.py) -- and the output read back with `analyse_object`:
- edit success: the changed attribute now has the target value;
- preservation: the other three attributes (of background, colour, shape, position) are the edited
  scene's (what they were);
- both: the two at once.
Rows "unchanged" (the picture itself as the output: success 0 by construction) and "target" (the
edited scene as drawn: the scorer's own ceiling) frame the model's figures.

`python -m training.eval_ip2p FOLDER [FOLDER ...] [--n 42] [--json out.json]`;
`--ship` then installs the first FOLDER's UNet as builtin:tinyworld-ip2p with a `training.json` marker
holding the report (decide from the table first: ship only a model clearly better than the stand-in).
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nodegraph_diffusion.paths import BUILTIN_DIR

from training.common import print_report, setup_threads
from training.scoring import analyse_object
from training.train_ip2p import EDITS, EditPair, edit_pairs
from training.world import draw_scene

EVAL_SEED = 9001  # the diffusion evaluation's world (training/evaluate.py)
ATTRIBUTES = ("background", "color", "shape", "position")
# the shipped model's settings (graphs/instruct_edit.yaml's defaults): at text guidance 5 its colour and
# background edits overshoot into blotches (logs/ip2p_eval_grammar2.json), at 2 / 1.2 they hold
SETTINGS: dict[str, Any] = {"guidance_scale": 2.0, "image_guidance_scale": 1.2, "num_inference_steps": 20}


def expected(pair: EditPair) -> dict[str, str]:
    """What the edited picture should show, under analyse_object's names."""
    obj = pair.edited.obj
    assert obj is not None
    return {"background": pair.edited.background, "color": obj.color, "shape": obj.shape,
            "position": obj.position}


def score_edit(image: np.ndarray, pair: EditPair) -> dict[str, bool]:
    """Edit success and preservation of one output (uint8 HxWx3)."""
    found, want = analyse_object(image), expected(pair)
    success = found[pair.edit] == want[pair.edit]
    kept = all(found[a] == want[a] for a in ATTRIBUTES if a != pair.edit)
    return {"success": success, "preserved": kept, "both": success and kept}


def table(images: Sequence[np.ndarray], pairs: Sequence[EditPair]) -> dict[str, dict[str, float]]:
    """Mean success / preservation / both, over all pairs and per edit kind."""
    scores = [score_edit(im, p) for im, p in zip(images, pairs, strict=True)]
    out: dict[str, dict[str, float]] = {}
    for group in ("all", *EDITS):
        rows = [s for s, p in zip(scores, pairs, strict=True) if group in ("all", p.edit)]
        out[group] = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in ("success", "preserved",
                                                                                  "both")}
        out[group]["n"] = len(rows)
    return out


def load_pipe(folder: Path) -> Any:
    """The folder as StableDiffusionInstructPix2PixPipeline (offline, no safety checker)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        folder, local_files_only=True, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def edit_images(folder: Path, pairs: Sequence[EditPair], seed: int = 0, **settings: Any) -> list[np.ndarray]:
    """The model's edits of `pairs` (sample i drawn with seed + i), as uint8 images."""
    from PIL import Image

    pipe = load_pipe(folder)
    kwargs = {**SETTINGS, **settings}
    out = []
    with torch.no_grad():
        for i, pair in enumerate(pairs):
            picture = Image.fromarray(draw_scene(pair.source))
            image = pipe(pair.instruction, image=picture, generator=torch.Generator().manual_seed(seed + i),
                         **kwargs).images[0]
            out.append(np.asarray(image.convert("RGB")))
    return out


def evaluate(folders: Sequence[Path], n: int, log: Callable[[str], None] = print,
             **settings: Any) -> dict[str, Any]:
    """The table for each folder, plus the unchanged and target rows, on `n` held-out pairs."""
    pairs = edit_pairs(EVAL_SEED, n, held=True)
    report: dict[str, Any] = {"n": n, "seed": EVAL_SEED, "settings": {**SETTINGS, **settings},
                              "unchanged": table([draw_scene(p.source) for p in pairs], pairs),
                              "target": table([draw_scene(p.edited) for p in pairs], pairs)}
    for folder in folders:
        report[str(folder)] = table(edit_images(folder, pairs, **settings), pairs)
        log(f"{folder}: {json.dumps(report[str(folder)])}")
    return report


def ship(folder: Path, report: dict[str, Any], builtin: Path = BUILTIN_DIR / "tinyworld-ip2p") -> Path:
    """Replace `builtin`'s UNet -- and its text encoder, when the run trained one -- with `folder`'s (the
    VAE, tokenizer and scheduler are tinyworld's, unchanged) and write the marker."""
    for part in ("unet", "text_encoder"):
        if part == "unet" or (folder / part / "model.safetensors").is_file():
            shutil.rmtree(builtin / part)
            shutil.copytree(folder / part, builtin / part)
    marker = {"trained_by": "python -m training.train_ip2p", "evaluated_by": "python -m training.eval_ip2p",
              "dtype": "float32", "report": report}
    (builtin / "training.json").write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    return builtin


def main(argv: list[str] | None = None) -> int:
    """Command line: print (and optionally store) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--n", type=int, default=42)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cfg", type=float, default=SETTINGS["guidance_scale"], help="text guidance")
    parser.add_argument("--image-guidance", type=float, default=SETTINGS["image_guidance_scale"])
    parser.add_argument("--ship", action="store_true", help="install FOLDERS[0] as builtin:tinyworld-ip2p")
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    report = evaluate(args.folders, args.n, guidance_scale=args.cfg, image_guidance_scale=args.image_guidance)
    print_report(report, args.json)
    if args.ship:
        ship(args.folders[0], report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
