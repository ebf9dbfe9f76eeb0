"""Evaluate a trained tinyworld family on scenes it never saw, with numbers (training/scoring.py).

Suites (each generates at the graphs' defaults: 64x64, DPM++ 2M, 20 steps, CFG 7.5):
- text: held-out object captions (world.held_out: combinations never trained on) -> background,
  object colour, shape and position accuracy;
- pose: held-out figure scenes' skeletons (+ their captions) through the pose ControlNet -> limb
  coverage and precision, with the same prompts without the ControlNet as the baseline; plus the real
  OpenPose files shipped with the project (graphs/poses, tests/fixtures/poses: other canvas sizes);
- edge: Canny maps of held-out scenes through the edge ControlNet -> edge F1 (baseline: no control);
- lora: the style detector's mean score at LoRA weights 0, 0.5, 1, 1.5 (should rise monotonically).
Generation goes through diffusers pipelines, which the engine matches exactly (tests/diffusion and
tests/control prove it), batched for speed.

`python -m training.evaluate RUN_OR_BUILTIN_FOLDER [--n 40] [--json out.json] [--grid out.png]`
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.scoring import edge_overlap, outline_score, pose_scores, score_text
from training.world import Scene, draw_scene, draw_skeleton, edge_map, held_out, sample_scene

ROOT = Path(__file__).resolve().parents[1]
REAL_POSES = (ROOT / "graphs" / "poses" / "standing_512x512.json", ROOT / "graphs" / "poses" / "arms_wide_768x512.json",
              ROOT / "tests" / "fixtures" / "poses" / "openpose_binary_body25_apose.json",
              ROOT / "tests" / "fixtures" / "poses" / "sd_pose_library_waving_both_hands.json",
              ROOT / "tests" / "fixtures" / "poses" / "sdwebui_controlnet_test_pose.json",
              ROOT / "tests" / "fixtures" / "poses" / "openpose_editor_normalized_missing_legs.json")
EVAL_SEED = 9001
SIZE = 64


@dataclass(frozen=True)
class Family:
    """Folders of a trained family (any may be missing)."""

    base: Path
    pose: Path | None = None
    edge: Path | None = None
    lora: Path | None = None

    @classmethod
    def at(cls, root: Path) -> Family:
        """The family in a run folder or the built-in folder (tinyworld, tinyworld-pose, ...)."""
        def opt(name: str) -> Path | None:
            return root / name if (root / name).exists() else None

        return cls(root / "tinyworld", opt("tinyworld-pose"), opt("tinyworld-edge"), opt("tinyworld-style"))


def eval_scenes(kind: str, n: int, seed: int = EVAL_SEED) -> list[Scene]:
    """The first `n` held-out scenes of `kind` ('object' or 'figure') in the evaluation world."""
    out, index = [], 0
    while len(out) < n:
        scene = sample_scene(seed, index)
        index += 1
        if (scene.obj is not None) == (kind == "object") and held_out(scene):
            out.append(scene)
    return out


def _pipe(family: Family, controlnet: Path | None = None) -> Any:
    from diffusers import ControlNetModel, DPMSolverMultistepScheduler, StableDiffusionControlNetPipeline
    from diffusers import StableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(family.base, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False, torch_dtype=torch.float32)
    base.scheduler = DPMSolverMultistepScheduler.from_config(base.scheduler.config)
    base.set_progress_bar_config(disable=True)
    if controlnet is None:
        return base
    net = ControlNetModel.from_pretrained(controlnet, local_files_only=True, torch_dtype=torch.float32)
    pipe = StableDiffusionControlNetPipeline(**base.components, controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: Any, prompts: list[str], seeds: list[int], control: np.ndarray | None = None,
             batch: int = 16, **kwargs: Any) -> np.ndarray:
    """uint8 images (B, 64, 64, 3) for `prompts`, one seeded CPU generator per image."""
    out = []
    for i in range(0, len(prompts), batch):
        args: dict[str, Any] = dict(prompt=prompts[i:i + batch], height=SIZE, width=SIZE, num_inference_steps=20,
                                    guidance_scale=7.5, output_type="np",
                                    generator=[torch.Generator().manual_seed(s) for s in seeds[i:i + batch]])
        if control is not None:
            args["image"] = torch.from_numpy(control[i:i + batch]).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            images = pipe(**args, **kwargs).images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def eval_text(family: Family, n: int) -> tuple[dict[str, float], np.ndarray, list[str]]:
    """Object attribute accuracies on held-out captions."""
    scenes = eval_scenes("object", n)
    prompts = [s.caption for s in scenes]
    images = generate(_pipe(family), prompts, list(range(n)))
    results = [score_text(img, s) for img, s in zip(images, scenes, strict=True)]
    scores = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
    return scores, images, prompts


def real_pose_skeletons() -> list[np.ndarray]:
    """Skeletons of the project's real OpenPose files, rendered as `control.render_pose` does at 64 px."""
    from nodegraph_control.pose import load_pose_file
    from nodegraph_control.pose_render import render_pose

    return [render_pose(load_pose_file(p), SIZE, SIZE, hands=False, face=False) for p in REAL_POSES if p.exists()]


def eval_pose(family: Family, n: int) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Limb coverage/precision with the pose ControlNet, without it, and on real pose files."""
    assert family.pose is not None
    scenes = eval_scenes("figure", n)
    skeletons = np.stack([draw_skeleton(s) for s in scenes])
    prompts = [s.caption for s in scenes]
    pipe = _pipe(family, family.pose)
    with_cn = generate(pipe, prompts, list(range(n)), skeletons)
    baseline = generate(_pipe(family), prompts, list(range(n)))
    real = np.stack(real_pose_skeletons())
    real_prompts = [f"a person in a {c} shirt, {b} background" for c, b in
                    zip(("red", "blue", "yellow", "white", "purple", "orange"),
                        ("green", "white", "blue", "black", "yellow", "cyan"), strict=True)][: len(real)]
    real_images = generate(pipe, real_prompts, list(range(len(real))), real)

    def agg(images: np.ndarray, sk: np.ndarray) -> tuple[float, float]:
        rs = [pose_scores(i, s) for i, s in zip(images, sk, strict=True)]
        return _mean([r["coverage"] for r in rs]), _mean([r["precision"] for r in rs])

    cov, prec = agg(with_cn, skeletons)
    base_cov, base_prec = agg(baseline, skeletons)
    real_cov, real_prec = agg(real_images, real)
    scores = {"coverage": cov, "precision": prec, "baseline_coverage": base_cov, "baseline_precision": base_prec,
              "real_files_coverage": real_cov, "real_files_precision": real_prec}
    return scores, np.concatenate([skeletons[:8], with_cn[:8]]), np.concatenate([real, real_images])


def eval_edge(family: Family, n: int) -> tuple[dict[str, float], np.ndarray]:
    """Edge F1 against the control edges, with the edge ControlNet and without."""
    assert family.edge is not None
    scenes = [sample_scene(EVAL_SEED + 1, i) for i in range(n)]
    edges = np.stack([edge_map(draw_scene(s)) for s in scenes])
    prompts = [s.caption for s in scenes]
    with_cn = generate(_pipe(family, family.edge), prompts, list(range(n)), edges)
    baseline = generate(_pipe(family), prompts, list(range(n)))
    f1 = _mean([edge_overlap(i, e) for i, e in zip(with_cn, edges, strict=True)])
    base = _mean([edge_overlap(i, e) for i, e in zip(baseline, edges, strict=True)])
    return {"f1": f1, "baseline_f1": base}, np.concatenate([edges[:8], with_cn[:8]])


def eval_lora(family: Family, n: int, weights: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5)) -> tuple[dict[str, Any], np.ndarray]:
    """Mean outline score at each LoRA weight (objects not black, backgrounds not black)."""
    assert family.lora is not None
    scenes = [s for s in (sample_scene(EVAL_SEED + 2, i) for i in range(6 * n))
              if s.background != "black" and (s.obj is None or s.obj.color != "black")][:n]
    prompts = [s.caption for s in scenes]
    pipe = _pipe(family)
    file = sorted(family.lora.glob("*.safetensors"))[0]
    pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name="style")
    means, rows = [], []
    for w in weights:
        pipe.set_adapters(["style"], [w])
        images = generate(pipe, prompts, list(range(n)))
        means.append(float(np.mean([outline_score(i) for i in images])))
        rows.append(images[:8])
    monotonic = all(b > a for a, b in zip(means, means[1:], strict=False))
    return {"weights": list(weights), "outline": means, "monotonic": monotonic}, np.concatenate(rows)


def grid(rows: list[np.ndarray], path: Path, scale: int = 2) -> Path:
    """Write rows of 64x64 images (each row up to 8) as one PNG."""
    from PIL import Image

    width = max(len(r) for r in rows)
    canvas = np.full((len(rows) * SIZE, width * SIZE, 3), 255, np.uint8)
    for y, row in enumerate(rows):
        for x, img in enumerate(row):
            canvas[y * SIZE:(y + 1) * SIZE, x * SIZE:(x + 1) * SIZE] = img
    Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST).save(path)
    return path


def evaluate(root: Path, n: int = 40, grid_path: Path | None = None,
             suites: tuple[str, ...] = ("text", "pose", "edge", "lora")) -> dict[str, Any]:
    """Run the suites available for the family in `root`; returns the scores (and writes a grid)."""
    family = Family.at(root)
    report: dict[str, Any] = {"n": n}
    rows: list[np.ndarray] = []
    if "text" in suites:
        report["text"], images, _ = eval_text(family, n)
        rows += [images[:8], images[8:16]]
    if "pose" in suites and family.pose is not None:
        report["pose"], pose_rows, real_rows = eval_pose(family, n)
        rows += [pose_rows[:8], pose_rows[8:], real_rows[: len(real_rows) // 2], real_rows[len(real_rows) // 2:]]
    if "edge" in suites and family.edge is not None:
        report["edge"], edge_rows = eval_edge(family, n)
        rows += [edge_rows[:8], edge_rows[8:]]
    if "lora" in suites and family.lora is not None:
        report["lora"], lora_rows = eval_lora(family, max(8, n // 2))
        rows += [lora_rows[i:i + 8] for i in range(0, len(lora_rows), 8)]
    if grid_path is not None and rows:
        grid(rows, grid_path)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: evaluate a run folder (or the built-in folder) and print/write the scores."""
    p = argparse.ArgumentParser(prog="python -m training.evaluate")
    p.add_argument("root", type=Path, help="run folder or builtin folder holding tinyworld, tinyworld-pose, ...")
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--grid", type=Path, default=None)
    p.add_argument("--suites", default="text,pose,edge,lora")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    report = evaluate(args.root, args.n, args.grid, tuple(args.suites.split(",")))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
