"""Scenes, captions and attribute-swapped captions for the tiny CLIP and captioner, and the retrieval metric.

A CLIP that only matches words to colours ("bag of attributes") can score a caption high although it
binds the colour to the wrong thing or names the wrong place. The swapped variants are the same caption
with one attribute changed (object colour, shape, position, size, background, or the object and
background colours exchanged; for figures shirt, pants, background, shirt and pants exchanged): the
training's hard negatives and the evaluation's candidates, which only a model that reads the whole
image and the whole caption ranks right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from training.world import (COLORS, POSITIONS, SHAPES, SIZES, Scene, caption_for, draw_scene, held_out,
                            sample_scene)

OBJECT_KINDS = ("color", "shape", "position", "size", "background", "color<->background")
FIGURE_KINDS = ("shirt", "pants", "background", "shirt<->pants")
KINDS = OBJECT_KINDS + FIGURE_KINDS
TRAIN_SEED = 1
EVAL_SEED = 9001  # the diffusion evaluation's world: held-out scenes of it are never trained on


def _variant(scene: Scene, obj: object = None, figure: object = None, background: str | None = None) -> Scene:
    """The scene with some attributes replaced, captioned by the world's grammar."""
    obj = scene.obj if obj is None else obj
    figure = scene.figure if figure is None else figure
    background = background or scene.background
    with_pants = " pants" in scene.caption
    caption = caption_for(background, obj, figure, with_pants)  # type: ignore[arg-type]
    return replace(scene, background=background, caption=caption, obj=obj, figure=figure)


def swapped_captions(scene: Scene, skip_held_out: bool = False) -> dict[str, list[str]]:
    """Every attribute-swapped variant of the scene's caption, by kind (each differs from the caption).

    Training passes `skip_held_out=True`: a held-out combination must not appear even as a negative,
    or the text encoder learns that such captions are always wrong (and ranks the held-out truth last).
    """
    out: dict[str, list[Scene]] = {}
    bg = scene.background
    if scene.obj is not None:
        o = scene.obj
        out["color"] = [_variant(scene, obj=replace(o, color=c)) for c in COLORS if c not in (o.color, bg)]
        out["shape"] = [_variant(scene, obj=replace(o, shape=s)) for s in SHAPES if s != o.shape]
        out["position"] = [_variant(scene, obj=replace(o, position=p)) for p in POSITIONS if p != o.position]
        out["size"] = [_variant(scene, obj=replace(o, size=s)) for s in SIZES if s != o.size]
        out["background"] = [_variant(scene, background=c) for c in COLORS if c not in (bg, o.color)]
        out["color<->background"] = [_variant(scene, obj=replace(o, color=bg), background=o.color)]
    elif scene.figure is not None:
        f = scene.figure
        out["shirt"] = [_variant(scene, figure=replace(f, shirt=c)) for c in COLORS if c not in (f.shirt, bg)]
        if " pants" in scene.caption:
            out["pants"] = [_variant(scene, figure=replace(f, pants=c)) for c in COLORS if c != f.pants]
            if f.shirt != f.pants:
                out["shirt<->pants"] = [_variant(scene, figure=replace(f, shirt=f.pants, pants=f.shirt))]
        out["background"] = [_variant(scene, background=c) for c in COLORS if c not in (bg, f.shirt)]
    captions = {k: [v.caption for v in vs
                    if v.caption != scene.caption and not (skip_held_out and held_out(v))]
                for k, vs in out.items()}
    return {k: v for k, v in captions.items() if v}


def world_scenes(seed: int, count: int, held: bool, start: int = 0) -> tuple[list[Scene], list[int]]:
    """The first `count` scenes from index `start` of world `seed` that are (held=True) or are not
    (held=False) held-out combinations, with their indices."""
    scenes, indices = [], []
    index = start
    while len(scenes) < count:
        scene = sample_scene(seed, index)
        if held_out(scene) == held:
            scenes.append(scene)
            indices.append(index)
        index += 1
    return scenes, indices


def render(scenes: Sequence[Scene]) -> np.ndarray:
    """(N, 64, 64, 3) uint8 drawings of the scenes."""
    return np.stack([draw_scene(s) for s in scenes])


@dataclass(frozen=True)
class Candidate:
    """One evaluation item: an image's true caption and its swapped variants by kind."""

    caption: str
    variants: dict[str, list[str]]


# score(image_index, texts) -> one score per text
Scorer = Callable[[int, list[str]], Sequence[float]]


def _credit(true: float, others: Sequence[float]) -> float:
    """1 if the true caption scores above every other; ties share the credit (a constant scorer earns
    exactly chance, 1 / (1 + number of alternatives)); 0 if any other scores higher."""
    best = max(others)
    if true > best:
        return 1.0
    if true < best:
        return 0.0
    return 1.0 / (1 + sum(1 for o in others if o == true))


def retrieval_table(score: Scorer, items: Sequence[Candidate]) -> dict[str, dict[str, float]]:
    """Top-1 retrieval of the true caption among each kind of swapped variants, and among all of an
    image's variants together ("all"): {kind: {"accuracy", "chance", "n"}}."""
    sums: dict[str, list[float]] = {}
    chance: dict[str, list[float]] = {}
    for i, item in enumerate(items):
        texts = [item.caption] + [t for k in item.variants for t in item.variants[k]]
        values = [float(v) for v in score(i, texts)]
        true, pos = values[0], 1
        every: list[float] = []
        for kind, variants in item.variants.items():
            others = values[pos:pos + len(variants)]
            pos += len(variants)
            every += others
            sums.setdefault(kind, []).append(_credit(true, others))
            chance.setdefault(kind, []).append(1.0 / (1 + len(others)))
        sums.setdefault("all", []).append(_credit(true, every))
        chance.setdefault("all", []).append(1.0 / (1 + len(every)))
    order = [k for k in (*KINDS, "all") if k in sums]
    return {k: {"accuracy": float(np.mean(sums[k])), "chance": float(np.mean(chance[k])), "n": len(sums[k])}
            for k in order}


def format_table(table: dict[str, dict[str, float]], title: str) -> str:
    """The table as text lines (kind, accuracy, chance, n)."""
    lines = [title, f"{'swap kind':<20} {'top-1':>6} {'chance':>7} {'n':>5}"]
    for kind, row in table.items():
        lines.append(f"{kind:<20} {row['accuracy']:>6.3f} {row['chance']:>7.3f} {int(row['n']):>5}")
    return "\n".join(lines)
