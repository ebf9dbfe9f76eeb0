"""A small-subset evaluation of the shipped (trained) built-in family: it draws what it is asked.

Skipped while the built-in folder holds the random tiny models (no `training.json` marker, written
by `python -m training.train ship`). Scenes are held-out combinations the model never trained on;
generation is deterministic on CPU, the thresholds sit well below the measured figures (README).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from nodegraph_diffusion.paths import BUILTIN_DIR
from training.evaluate import Family, eval_scenes, generate, _pipe
from training.scoring import pose_scores, score_text
from training.ship import MARKER

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (BUILTIN_DIR / "tinyworld" / MARKER).exists(),
                                reason="built-in tinyworld is the random model (not shipped by training/)")


def test_shipped_model_follows_held_out_object_captions() -> None:
    scenes = eval_scenes("object", 12)
    images = generate(_pipe(Family.at(BUILTIN_DIR)), [s.caption for s in scenes], list(range(12)), batch=12)
    results = [score_text(img, s) for img, s in zip(images, scenes, strict=True)]
    accuracy = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
    assert accuracy["background"] >= 0.75, accuracy
    assert accuracy["color"] >= 0.5 and accuracy["position"] >= 0.5 and accuracy["shape"] >= 0.4, accuracy


def test_pose_graph_draws_a_figure_on_the_skeleton(tmp_path: Path) -> None:
    from nodegraph import Engine, RunOptions

    def run(strength: float, out: Path) -> tuple[np.ndarray, np.ndarray]:
        Engine().run(ROOT / "graphs" / "controlnet_pose.yaml", {"strength": strength},
                     options=RunOptions(out_dir=out, device="cpu", dtype="float32", show_progress=False))
        with PILImage.open(out / "controlnet_pose.png") as im, PILImage.open(out / "pose_skeleton.png") as sk:
            return np.asarray(im.convert("RGB")), np.asarray(sk.convert("RGB"))

    image, skeleton = run(1.0, tmp_path / "cn")
    plain, _ = run(0.0, tmp_path / "plain")
    with_cn, without = pose_scores(image, skeleton), pose_scores(plain, skeleton)
    assert with_cn["coverage"] >= 0.7 and with_cn["precision"] >= 0.5, with_cn
    assert with_cn["coverage"] > without["coverage"] + 0.1, (with_cn, without)
