"""Evaluate a trained tinyworld family on scenes it never saw, with numbers (training/scoring.py).

Suites (each generates at the graphs' defaults: 64x64, DPM++ 2M, 20 steps, CFG `CFG`):
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
CFG = 3.0  # the graphs' default guidance scale (the demo model over-saturates at 7.5)


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


def _pipe(family: Family, *controlnets: Path) -> Any:
    """A DPM++ 2M pipeline of the family's base, with the given ControlNets (several: a multi-ControlNet)."""
    from diffusers import ControlNetModel, DPMSolverMultistepScheduler, StableDiffusionControlNetPipeline
    from diffusers import StableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(family.base, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False, torch_dtype=torch.float32)
    base.scheduler = DPMSolverMultistepScheduler.from_config(base.scheduler.config)
    base.set_progress_bar_config(disable=True)
    if not controlnets:
        return base
    nets = [ControlNetModel.from_pretrained(f, local_files_only=True, torch_dtype=torch.float32) for f in controlnets]
    pipe = StableDiffusionControlNetPipeline(**base.components, controlnet=nets[0] if len(nets) == 1 else nets)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _with_style(pipe: Any, family: Family) -> Any:
    """`pipe` with the family's style LoRA loaded as adapter "style" (weight set per call)."""
    assert family.lora is not None
    file = sorted(family.lora.glob("*.safetensors"))[0]
    pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name="style")
    return pipe


def generate(pipe: Any, prompts: list[str], seeds: list[int], control: np.ndarray | list[np.ndarray] | None = None,
             batch: int = 16, **kwargs: Any) -> np.ndarray:
    """uint8 images (B, 64, 64, 3) for `prompts`, one seeded CPU generator per image; `control`: the
    control images (uint8, B x H x W x 3), or a list of them for a multi-ControlNet pipeline."""
    def tensor(images: np.ndarray, i: int) -> torch.Tensor:
        return torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float() / 255.0

    out = []
    for i in range(0, len(prompts), batch):
        args: dict[str, Any] = dict(prompt=prompts[i:i + batch], height=SIZE, width=SIZE, num_inference_steps=20,
                                    guidance_scale=kwargs.get("guidance_scale", CFG), output_type="np",
                                    generator=[torch.Generator().manual_seed(s) for s in seeds[i:i + batch]])
        if control is not None:
            args["image"] = [tensor(c, i) for c in control] if isinstance(control, list) else tensor(control, i)
        with torch.no_grad():
            images = pipe(**{**args, **kwargs}).images
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


def eval_lora(family: Family, n: int, weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
              beyond: float = 1.5) -> tuple[dict[str, Any], np.ndarray]:
    """Mean outline score at each LoRA weight over its range 0..1 (should rise monotonically), and at
    `beyond` (past the weight it was trained at; reported, not part of the monotonic check).
    Objects not black, backgrounds not black (the detector looks for a dark rim)."""
    assert family.lora is not None
    scenes = [s for s in (sample_scene(EVAL_SEED + 2, i) for i in range(6 * n))
              if s.background != "black" and (s.obj is None or s.obj.color != "black")][:n]
    prompts = [s.caption for s in scenes]
    pipe = _with_style(_pipe(family), family)
    scores: dict[float, float] = {}
    rows = []
    for w in (*weights, beyond):
        pipe.set_adapters(["style"], [w])
        images = generate(pipe, prompts, list(range(n)))
        scores[w] = float(np.mean([outline_score(i) for i in images]))
        if w in (0.0, 0.5, 1.0, beyond):
            rows.append(images[:8])
    means = [scores[w] for w in weights]
    monotonic = all(b > a for a, b in zip(means, means[1:], strict=False))
    return {"weights": list(weights), "outline": means, "monotonic": monotonic,
            "beyond_weight": beyond, "beyond_outline": scores[beyond]}, np.concatenate(rows)


def eval_multi(family: Family, n: int, lora_weight: float = 1.0) -> tuple[dict[str, float], np.ndarray]:
    """Pose + edge ControlNets + style LoRA in one sampler: is each still measurable?

    Held-out figure scenes; the pose net gets the figure's skeleton, the edge net the Canny map of the
    same scene. Scores: limb coverage (pose), edge F1 (edge) and the outline score (LoRA) — each next
    to the same generation without that one ingredient, so its own effect is visible.
    """
    assert family.pose is not None and family.edge is not None and family.lora is not None
    scenes = eval_scenes("figure", n, seed=EVAL_SEED + 3)
    skeletons = np.stack([draw_skeleton(s) for s in scenes])
    edges = np.stack([edge_map(draw_scene(s)) for s in scenes])
    prompts = [s.caption for s in scenes]
    pipe = _with_style(_pipe(family, family.pose, family.edge), family)

    def run(pose_scale: float, edge_scale: float, weight: float) -> np.ndarray:
        pipe.set_adapters(["style"], [weight])
        return generate(pipe, prompts, list(range(n)), [skeletons, edges],
                        controlnet_conditioning_scale=[pose_scale, edge_scale])

    together = run(1.0, 1.0, lora_weight)
    no_pose, no_edge, no_lora = run(0.0, 1.0, lora_weight), run(1.0, 0.0, lora_weight), run(1.0, 1.0, 0.0)
    neither = run(0.0, 0.0, lora_weight)

    def coverage(images: np.ndarray) -> float:
        return _mean([pose_scores(i, s)["coverage"] for i, s in zip(images, skeletons, strict=True)])

    def f1(images: np.ndarray) -> float:
        return _mean([edge_overlap(i, e) for i, e in zip(images, edges, strict=True)])

    def outline(images: np.ndarray) -> float:
        return float(np.mean([outline_score(i) for i in images]))

    scores = {"coverage": coverage(together), "coverage_without_controlnets": coverage(neither),
              "edge_f1": f1(together), "edge_f1_without_controlnets": f1(neither),
              "edge_f1_pose_only": f1(no_edge), "coverage_edge_only": coverage(no_pose),
              "outline": outline(together), "outline_without_lora": outline(no_lora)}
    return scores, np.concatenate([skeletons[:8], edges[:8], together[:8], no_lora[:8]])


SHAPE_SWAP = {"circle": "square", "square": "triangle", "triangle": "circle"}
P2P_GRAPH = ROOT / "graphs" / "prompt_to_prompt.yaml"


def _p2p_pair(engine: Any, model: Path, source: str, edited: str, seed: int, out_dir: Path,
              **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
    """(source, edited) uint8 images from graphs/prompt_to_prompt.yaml run by the engine."""
    from nodegraph import RunOptions

    options = RunOptions(out_dir=out_dir, device="cpu", dtype="float32", show_progress=False)
    result = engine.run(P2P_GRAPH, {"model": str(model.resolve()), "source": source, "edited": edited, "seed": seed,
                                    **overrides}, options=options)
    pixels = result.outputs["image"]["out"].pixels  # (2, 3, H, W) in [0, 1]
    images = (pixels.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return images[0], images[1]


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the bounding boxes of two masks (0 when either is empty)."""
    if not a.any() or not b.any():
        return 0.0
    (ay, ax), (by, bx) = np.nonzero(a), np.nonzero(b)
    y0, y1 = max(ay.min(), by.min()), min(ay.max(), by.max()) + 1
    x0, x1 = max(ax.min(), bx.min()), min(ax.max(), bx.max()) + 1
    inter = max(0, y1 - y0) * max(0, x1 - x0)
    area = lambda ys, xs: (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # noqa: E731
    return float(inter / (area(ay, ax) + area(by, bx) - inter))


def eval_p2p(family: Family, n: int, **settings: Any) -> tuple[dict[str, float], np.ndarray]:
    """Prompt-to-prompt shape swap (circle -> square -> triangle -> circle) on held-out object captions.

    The object must keep its place and size while its shape changes: object-mask IoU and bounding-box
    IoU between source and edit, and how often the edit shows the new shape. Baseline: the edited
    prompt sampled from the same noise without prompt-to-prompt (cross/self replace 0). Note that two
    different shapes filling the same box cannot reach mask IoU 1 (circle vs square: pi/4 = 0.785).
    """
    import tempfile

    from nodegraph import Engine

    from training.scoring import background_rgb, classify_shape, foreground_mask, largest_component, shape_templates

    def mask(img: np.ndarray) -> np.ndarray:
        return largest_component(foreground_mask(img, background_rgb(img)))

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        union = (a | b).sum()
        return float((a & b).sum() / union) if union else 0.0

    scenes = [s for s in eval_scenes("object", 2 * n) if s.obj is not None][:n]
    engine = Engine()
    stats: dict[str, list[float]] = {k: [] for k in ("mask_iou", "mask_iou_ceiling", "box_iou", "changed", "kept_source",
                                                       "base_mask_iou", "base_box_iou", "base_changed")}
    rows: list[np.ndarray] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, scene in enumerate(scenes):
            shape = scene.obj.shape
            edited = scene.caption.replace(shape, SHAPE_SWAP[shape])
            src, edit = _p2p_pair(engine, family.base, scene.caption, edited, i, Path(tmp), **settings)
            _, plain = _p2p_pair(engine, family.base, scene.caption, edited, i, Path(tmp),
                                 cross_replace=0.0, self_replace=0.0)
            ms, me, mp = mask(src), mask(edit), mask(plain)
            stats["mask_iou"].append(iou(ms, me))
            ideal = shape_templates(ms) if ms.any() else None  # the best two shapes in one box can do
            stats["mask_iou_ceiling"].append(iou(ideal[shape], ideal[SHAPE_SWAP[shape]]) if ideal else 0.0)
            stats["box_iou"].append(_box_iou(ms, me))
            stats["changed"].append(float(me.any() and classify_shape(me) == SHAPE_SWAP[shape]))
            stats["kept_source"].append(float(ms.any() and classify_shape(ms) == shape))
            stats["base_mask_iou"].append(iou(ms, mp))
            stats["base_box_iou"].append(_box_iou(ms, mp))
            stats["base_changed"].append(float(mp.any() and classify_shape(mp) == SHAPE_SWAP[shape]))
            if i < 8:
                rows.append(np.stack([src, edit, plain]))
    scores = {k: float(np.mean(v)) for k, v in stats.items()}
    pictures = np.concatenate([np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                               np.stack([r[2] for r in rows])])
    return scores, pictures


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
             suites: tuple[str, ...] = ("text", "pose", "edge", "lora", "p2p", "multi")) -> dict[str, Any]:
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
    if "p2p" in suites:
        report["p2p"], p2p_rows = eval_p2p(family, n)
        rows += [p2p_rows[:8], p2p_rows[8:16]]
    if "multi" in suites and None not in (family.pose, family.edge, family.lora):
        report["multi"], multi_rows = eval_multi(family, max(8, n // 2))
        rows += [multi_rows[i:i + 8] for i in range(0, len(multi_rows), 8)]
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
    p.add_argument("--suites", default="text,pose,edge,lora,p2p,multi")
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
