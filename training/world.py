"""A procedural world to train the built-in demo models on: no downloads, every sample from a seed.

A scene is a flat background colour plus either one object (shape, colour, size, position) or one
human-like figure drawn from 18 OpenPose (COCO-18) keypoints in a random plausible pose, dressed in a
shirt and pants colour. Each sample comes with
- a caption from a small grammar whose every word is one token of the project's own tokenizer,
- the OpenPose skeleton rendering of the keypoints (the control pack's renderer, so training sees
  exactly what `control.render_pose` feeds a ControlNet at run time),
- its Canny edge map (the control pack's `canny`, as `control.canny` computes it),
- the ground truth (`Scene`) the evaluation scores generated images against.

Sample `i` of a world with seed `s` depends only on `(s, i)` (numpy's SeedSequence), so data sets are
reproducible and can be generated in any order or in parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from nodegraph_control.pose import Person, PoseFrame
from nodegraph_control.pose_render import render_pose

SIZE = 64
SUPERSAMPLE = 4  # objects and figures are drawn at 4x and area-averaged: soft, natural edges

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 20),
    "purple": (140, 50, 190),
    "pink": (250, 140, 200),
    "cyan": (40, 215, 225),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 0.12, "big": 0.2}  # half-size as a fraction of the image side
# caption phrase -> object centre as fractions of the image side
POSITIONS: dict[str, tuple[float, float]] = {
    "on the left": (0.25, 0.5),
    "on the right": (0.75, 0.5),
    "at the top": (0.5, 0.25),
    "at the bottom": (0.5, 0.75),
    "in the center": (0.5, 0.5),
}
SKIN = (230, 185, 150)
HAIR = (70, 45, 30)
KIND_WEIGHTS = {"object": 0.5, "figure": 0.5}


@dataclass(frozen=True)
class SceneObject:
    """One flat-coloured shape; `center` and `half` in pixels of the output image."""

    shape: str
    color: str
    size: str
    position: str
    center: tuple[float, float]
    half: float


@dataclass(frozen=True)
class Figure:
    """A person: 18 COCO-18 keypoints in output pixels (None = not given to the skeleton)."""

    keypoints: tuple[tuple[float, float], ...]
    shirt: str
    pants: str
    visible: tuple[bool, ...]  # which keypoints the skeleton shows (real files miss some)
    height: float


@dataclass(frozen=True)
class Scene:
    """Ground truth of one sample."""

    background: str
    caption: str
    obj: SceneObject | None = None
    figure: Figure | None = None
    style: str = "plain"  # "plain" or "outlined" (the style LoRA's look)


@dataclass(frozen=True)
class Sample:
    """One rendered sample: uint8 HxWx3 image, skeleton and edge map, plus its scene."""

    scene: Scene
    image: np.ndarray
    skeleton: np.ndarray
    edges: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def rng_for(seed: int, index: int) -> np.random.Generator:
    """The generator of sample `index` of the world `seed` (independent of any other sample)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _pick(rng: np.random.Generator, options: tuple[str, ...], exclude: tuple[str, ...] = ()) -> str:
    allowed = [o for o in options if o not in exclude]
    return allowed[int(rng.integers(len(allowed)))]


def _too_close(a: str, b: str) -> bool:
    """Colour pairs that would make the object hard to see on the background."""
    close = {frozenset(("yellow", "white")), frozenset(("orange", "yellow")), frozenset(("pink", "white")),
             frozenset(("orange", "red")), frozenset(("pink", "orange"))}
    return a == b or frozenset((a, b)) in close


def sample_object(rng: np.random.Generator, background: str, size_px: int = SIZE) -> SceneObject:
    """A random object whose colour stands out from `background`."""
    shape = _pick(rng, SHAPES)
    color = _pick(rng, tuple(c for c in COLORS if not _too_close(c, background)))
    size = _pick(rng, tuple(SIZES))
    position = _pick(rng, tuple(POSITIONS))
    fx, fy = POSITIONS[position]
    jitter = 0.06 * size_px
    cx = fx * size_px + float(rng.uniform(-jitter, jitter))
    cy = fy * size_px + float(rng.uniform(-jitter, jitter))
    half = SIZES[size] * size_px * float(rng.uniform(0.9, 1.1))
    return SceneObject(shape, color, size, position, (cx, cy), half)


def _rot(angle_deg: float, length: float) -> tuple[float, float]:
    """Offset of a limb of `length` at `angle_deg` from straight down (positive = towards +x)."""
    a = math.radians(angle_deg)
    return (length * math.sin(a), length * math.cos(a))


def sample_pose(rng: np.random.Generator, size_px: int = SIZE) -> tuple[tuple[tuple[float, float], ...], float]:
    """18 keypoints of a plausible standing/walking/arms-raised pose, in output pixels, and the height."""
    h = float(rng.uniform(0.55, 0.92)) * size_px
    cx = float(rng.uniform(0.5 * h * 0.5, size_px - 0.5 * h * 0.5))
    cx = min(max(cx, 0.22 * size_px), 0.78 * size_px)
    top = float(rng.uniform(0.02, 0.98 - h / size_px)) * size_px if h < 0.96 * size_px else 0.02 * size_px
    lean = float(rng.uniform(-8, 8))
    neck = (cx, top + 0.17 * h)
    hip_c = (neck[0] + _rot(lean, 0.34 * h)[0], neck[1] + _rot(lean, 0.34 * h)[1])
    shoulder_w, hip_w = 0.13 * h, 0.08 * h
    r_sh, l_sh = (neck[0] - shoulder_w, neck[1] + 0.01 * h), (neck[0] + shoulder_w, neck[1] + 0.01 * h)
    r_hip, l_hip = (hip_c[0] - hip_w, hip_c[1]), (hip_c[0] + hip_w, hip_c[1])
    upper, fore, thigh, shin = 0.17 * h, 0.15 * h, 0.24 * h, 0.24 * h
    style = rng.integers(4)  # 0 down, 1 wide, 2 raised, 3 anything
    points: dict[int, tuple[float, float]] = {1: neck, 2: r_sh, 5: l_sh, 8: r_hip, 11: l_hip}
    for side, sh, sign in ((2, r_sh, -1.0), (5, l_sh, 1.0)):
        base = {0: rng.uniform(5, 35), 1: rng.uniform(60, 110), 2: rng.uniform(120, 170)}.get(
            int(style), rng.uniform(5, 170))
        a1 = sign * float(base)
        bend = sign * float(rng.uniform(-20, 100)) * (1 if rng.random() < 0.5 else -0.5)
        elbow = (sh[0] + _rot(a1, upper)[0], sh[1] + _rot(a1, upper)[1])
        wrist = (elbow[0] + _rot(a1 + bend, fore)[0], elbow[1] + _rot(a1 + bend, fore)[1])
        points[side + 1], points[side + 2] = elbow, wrist
    stride = float(rng.uniform(0, 30))
    for side, hip, sign in ((8, r_hip, -1.0), (11, l_hip, 1.0)):
        a1 = sign * float(rng.uniform(0, 12)) + (stride if side == 8 else -stride) * 0.5
        knee_bend = -float(rng.uniform(0, 35)) * (1 if a1 > 0 else -1)
        knee = (hip[0] + _rot(a1, thigh)[0], hip[1] + _rot(a1, thigh)[1])
        ankle = (knee[0] + _rot(a1 + knee_bend, shin)[0], knee[1] + _rot(a1 + knee_bend, shin)[1])
        points[side + 1], points[side + 2] = knee, ankle
    head_tilt = float(rng.uniform(-10, 10))
    nose = (neck[0] + _rot(180 + head_tilt, 0.1 * h)[0], neck[1] + _rot(180 + head_tilt, 0.1 * h)[1])
    eye_dx, eye_dy = 0.03 * h, -0.025 * h
    turn = float(rng.uniform(-0.3, 0.3)) * 0.04 * h
    points[0] = nose
    points[14] = (nose[0] - eye_dx + turn, nose[1] + eye_dy)
    points[15] = (nose[0] + eye_dx + turn, nose[1] + eye_dy)
    points[16] = (nose[0] - 2.2 * eye_dx + turn, nose[1] + 0.2 * eye_dy)
    points[17] = (nose[0] + 2.2 * eye_dx + turn, nose[1] + 0.2 * eye_dy)
    return tuple(points[i] for i in range(18)), h


def sample_visibility(rng: np.random.Generator) -> tuple[bool, ...]:
    """Which keypoints the skeleton shows: all (most often), no legs, or a few random points dropped."""
    visible = [True] * 18
    roll = rng.random()
    if roll < 0.12:
        for i in (9, 10, 12, 13):
            visible[i] = False
    elif roll < 0.3:
        for i in rng.choice([14, 15, 16, 17, 4, 7, 10, 13], size=2, replace=False):
            visible[int(i)] = False
    return tuple(visible)


def sample_figure(rng: np.random.Generator, background: str, size_px: int = SIZE) -> Figure:
    """A random person whose shirt stands out from `background`."""
    keypoints, height = sample_pose(rng, size_px)
    shirt = _pick(rng, tuple(c for c in COLORS if not _too_close(c, background)))
    pants = _pick(rng, tuple(c for c in COLORS if not _too_close(c, background)))
    return Figure(keypoints, shirt, pants, sample_visibility(rng), height)


def caption_for(scene_bg: str, obj: SceneObject | None, figure: Figure | None, with_pants: bool) -> str:
    """The grammar: '<subject>, <colour> background'."""
    parts = []
    if figure is not None:
        person = f"a person in a {figure.shirt} shirt"
        if with_pants:
            person += f" and {figure.pants} pants"
        parts.append(person)
    if obj is not None:
        parts.append(f"a {obj.size} {obj.color} {obj.shape} {obj.position}")
    return " and ".join(parts) + f", {scene_bg} background"


def sample_scene(seed: int, index: int, size_px: int = SIZE, style: str = "plain") -> Scene:
    """Scene `index` of world `seed`: ground truth and caption, nothing drawn yet."""
    rng = rng_for(seed, index)
    background = _pick(rng, COLORS)
    kind = "object" if rng.random() < KIND_WEIGHTS["object"] else "figure"
    obj = sample_object(rng, background, size_px) if kind == "object" else None
    figure = sample_figure(rng, background, size_px) if kind == "figure" else None
    with_pants = bool(rng.random() < 0.5)
    return Scene(background, caption_for(background, obj, figure, with_pants), obj, figure, style)


def _shape_polygon(obj: SceneObject, scale: float) -> np.ndarray:
    cx, cy, r = obj.center[0] * scale, obj.center[1] * scale, obj.half * scale
    if obj.shape == "square":
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif obj.shape == "triangle":
        pts = [(cx, cy - r * 1.1), (cx + r * 1.15, cy + r * 0.9), (cx - r * 1.15, cy + r * 0.9)]
    else:
        pts = [(cx + r * math.cos(t), cy + r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 64, endpoint=False)]
    return np.round(np.array(pts)).astype(np.int32)


def _draw_object(canvas: np.ndarray, obj: SceneObject, scale: float, outlined: bool) -> None:
    poly = _shape_polygon(obj, scale)
    cv2.fillPoly(canvas, [poly], PALETTE[obj.color])
    if outlined:
        cv2.polylines(canvas, [poly], True, PALETTE["black"], thickness=max(1, round(2.2 * scale)))


def _draw_figure(canvas: np.ndarray, fig: Figure, scale: float, outlined: bool) -> None:
    k = [(x * scale, y * scale) for x, y in fig.keypoints]
    h = fig.height * scale
    limb = max(2, round(0.07 * h))

    def line(a: int, b: int, color: tuple[int, int, int], width: int) -> None:
        pa, pb = (round(k[a][0]), round(k[a][1])), (round(k[b][0]), round(k[b][1]))
        cv2.line(canvas, pa, pb, color, width)
        cv2.circle(canvas, pb, width // 2, color, -1)

    shirt, pants = PALETTE[fig.shirt], PALETTE[fig.pants]
    strokes: list[tuple[int, int, tuple[int, int, int], int]] = [
        (8, 9, pants, limb + 1), (9, 10, pants, limb), (11, 12, pants, limb + 1), (12, 13, pants, limb),
        (2, 3, shirt, limb), (3, 4, SKIN, max(2, limb - 1)), (5, 6, shirt, limb), (6, 7, SKIN, max(2, limb - 1)),
    ]
    torso = np.round(np.array([k[2], k[5], k[11], k[8]])).astype(np.int32)
    head_c = (round((k[0][0] + k[1][0] * 0.2) / 1.2), round((k[0][1] + k[1][1] * 0.2) / 1.2))
    head_r = max(2, round(0.085 * h))
    if outlined:
        dark, pad = PALETTE["black"], max(1, round(1.1 * scale))
        for a, b, _c, w in strokes:
            line(a, b, dark, w + 2 * pad)
        cv2.fillPoly(canvas, [torso], dark)
        cv2.polylines(canvas, [torso], True, dark, thickness=2 * pad)
        cv2.circle(canvas, head_c, head_r + pad, dark, -1)
        cv2.line(canvas, (round(k[1][0]), round(k[1][1])), head_c, dark, max(2, limb // 2) + 2 * pad)
    for a, b, c, w in strokes[:4]:
        line(a, b, c, w)
    cv2.line(canvas, (round(k[1][0]), round(k[1][1])), head_c, SKIN, max(2, limb // 2))
    cv2.fillPoly(canvas, [torso], shirt)
    for a, b, c, w in strokes[4:]:
        line(a, b, c, w)
    cv2.circle(canvas, head_c, head_r, SKIN, -1)
    cv2.ellipse(canvas, (head_c[0], head_c[1] - head_r // 3), (head_r, max(1, head_r * 2 // 3)), 0, 180, 360, HAIR, -1)


def draw_scene(scene: Scene, size_px: int = SIZE) -> np.ndarray:
    """The scene as a uint8 RGB image (drawn at SUPERSAMPLE x, then area-averaged)."""
    big = size_px * SUPERSAMPLE
    canvas = np.empty((big, big, 3), dtype=np.uint8)
    canvas[:] = PALETTE[scene.background]
    outlined = scene.style == "outlined"
    if scene.figure is not None:
        _draw_figure(canvas, scene.figure, SUPERSAMPLE, outlined)
    if scene.obj is not None:
        _draw_object(canvas, scene.obj, SUPERSAMPLE, outlined)
    return cv2.resize(canvas, (size_px, size_px), interpolation=cv2.INTER_AREA)


def pose_frame(figure: Figure | None, size_px: int = SIZE) -> PoseFrame:
    """The control pack's `PoseFrame` for a figure (no people for an object scene)."""
    people: tuple[Person, ...] = ()
    if figure is not None:
        body = tuple(p if v else None for p, v in zip(figure.keypoints, figure.visible, strict=True))
        people = (Person(body=body),)
    return PoseFrame(width=float(size_px), height=float(size_px), people=people)


def draw_skeleton(scene: Scene, size_px: int = SIZE) -> np.ndarray:
    """The OpenPose skeleton image a ControlNet sees (black for scenes without a figure)."""
    return render_pose(pose_frame(scene.figure, size_px), size_px, size_px, hands=False, face=False)


def edge_map(image: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """Canny edges as `control.canny` computes them (white on black, 3 channels, uint8)."""
    import torch

    from nodegraph_control.edges import canny

    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    edges = canny(pixels, low, high)[0]
    return (edges.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def make_sample(seed: int, index: int, size_px: int = SIZE, style: str = "plain") -> Sample:
    """Sample `index` of world `seed`, fully rendered."""
    scene = sample_scene(seed, index, size_px, style)
    image = draw_scene(scene, size_px)
    return Sample(scene, image, draw_skeleton(scene, size_px), edge_map(image))


def held_out(scene: Scene, buckets: int = 10) -> bool:
    """Scenes whose caption content falls in one of `buckets` (stable hash) are never trained on, so the
    evaluation can ask for combinations the model never saw (e.g. a cyan triangle on the left, on black)."""
    import zlib

    if scene.obj is not None:
        key = f"{scene.obj.color}|{scene.obj.shape}|{scene.obj.position}|{scene.background}"
    elif scene.figure is not None:
        key = f"{scene.figure.shirt}|{scene.figure.pants}|{scene.background}"
    else:
        key = scene.background
    return zlib.crc32(key.encode()) % buckets == 0


def reframe(scene: Scene, seed: int, index: int, size_px: int = SIZE) -> Scene:
    """The scene's figure as real pose files often frame it: closer (up to 1.4x, legs leaving the frame)
    and/or stretched sideways (0.75-1.4x, as a 768x512 canvas drawn at 64x64 is), keypoints outside
    the image dropped from the skeleton. Scenes without a figure are returned unchanged."""
    fig = scene.figure
    if fig is None:
        return scene
    rng = rng_for(seed + 7777, index)
    zoom = float(rng.uniform(1.0, 1.4)) if rng.random() < 0.7 else 1.0
    stretch = float(rng.uniform(0.75, 1.4)) if rng.random() < 0.5 else 1.0
    neck = fig.keypoints[1]
    h = fig.height * zoom
    top = 0.17 * h + 2.0
    new_neck = (float(rng.uniform(0.3, 0.7)) * size_px, float(rng.uniform(top, max(top, 0.4 * size_px))))
    points = tuple((new_neck[0] + (x - neck[0]) * zoom * stretch, new_neck[1] + (y - neck[1]) * zoom)
                   for x, y in fig.keypoints)
    visible = tuple(v and 0 <= x < size_px and 0 <= y < size_px for (x, y), v in zip(points, fig.visible, strict=True))
    return Scene(scene.background, scene.caption, scene.obj, Figure(points, fig.shirt, fig.pants, visible, h),
                 scene.style)


def restyle(scene: Scene, style: str) -> Scene:
    """The same scene in another style (the LoRA's training pairs)."""
    return Scene(scene.background, scene.caption, scene.obj, scene.figure, style)
