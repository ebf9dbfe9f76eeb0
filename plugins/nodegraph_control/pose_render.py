"""Draw OpenPose keypoints as the ControlNet openpose conditioning image.

Follows controlnet_aux / sd-webui-controlnet `draw_poses` (RENDERING.md sections 2-4, 7, 8): per person,
17 limbs as filled ellipses (`cv2.ellipse2Poly` + `cv2.fillConvexPoly`) at 0.6 x colour, then 18 joints
as filled discs at full colour, then the left and right hands (20 coloured lines, blue joints), then
the face (white dots). Black RGB canvas, no anti-aliasing, so colours are exact.

Fitting: the pose canvas (any size and aspect) is scaled uniformly to fit the output and centred;
the bands left over are black (letterboxing). Points are mapped straight to output pixels and drawn
there (never rendered at canvas size and resampled), so every pixel keeps an exact palette colour.

Geometry: the reference draws with fixed sizes (stick half-width 4, joint radius 4, hand lines 2,
hand joints 4, face dots 3) whatever the image size, which suits outputs of 256 px and more (the
models were trained at 512). Below 256 px (shorter side) those sizes would swamp a tiny image, so
they scale by `shorter_side / 256`, rounded, never under 1 px. `scale_geometry=False` keeps the
reference sizes at every size.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

from nodegraph_control.pose import Points, PoseFrame

COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (255, 85, 0),
    (255, 170, 0),
    (255, 255, 0),
    (170, 255, 0),
    (85, 255, 0),
    (0, 255, 0),
    (0, 255, 85),
    (0, 255, 170),
    (0, 255, 255),
    (0, 170, 255),
    (0, 85, 255),
    (0, 0, 255),
    (85, 0, 255),
    (170, 0, 255),
    (255, 0, 255),
    (255, 0, 170),
    (255, 0, 85),
)
# 0-based COCO-18 limb pairs in drawing order (controlnet_aux limbSeq minus the never-drawn ear pairs).
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
)
HAND_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 4),
    (0, 5),
    (5, 6),
    (6, 7),
    (7, 8),
    (0, 9),
    (9, 10),
    (10, 11),
    (11, 12),
    (0, 13),
    (13, 14),
    (14, 15),
    (15, 16),
    (0, 17),
    (17, 18),
    (18, 19),
    (19, 20),
)
HAND_JOINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)
EPS = 0.01
REFERENCE_MIN_SIDE = 256


@dataclass(frozen=True)
class Geometry:
    """Stroke sizes in output pixels."""

    stickwidth: int = 4
    joint_radius: int = 4
    hand_thickness: int = 2
    hand_joint_radius: int = 4
    face_radius: int = 3

    @classmethod
    def for_size(cls, width: int, height: int, scale: bool = True) -> Geometry:
        """Reference sizes at >= 256 px (shorter side); proportionally smaller below, at least 1 px."""
        side = min(width, height)
        if not scale or side >= REFERENCE_MIN_SIDE:
            return cls()
        f = side / REFERENCE_MIN_SIDE
        ref = cls()

        def s(v: int) -> int:
            return max(1, round(v * f))

        return cls(
            s(ref.stickwidth),
            s(ref.joint_radius),
            s(ref.hand_thickness),
            s(ref.hand_joint_radius),
            s(ref.face_radius),
        )


@dataclass(frozen=True)
class Fit:
    """Canvas -> output mapping: uniform scale then offset (x' = x * sx + dx)."""

    sx: float
    sy: float
    dx: float
    dy: float


def fit_canvas(frame: PoseFrame, width: int, height: int) -> Fit:
    """Scale the pose canvas uniformly into `width` x `height` and centre it (letterboxing)."""
    if frame.normalized and frame.canvas_inferred:
        return Fit(float(width), float(height), 0.0, 0.0)  # normalised points, no canvas: whole output
    scale = min(width / frame.width, height / frame.height)
    return Fit(scale, scale, (width - frame.width * scale) / 2.0, (height - frame.height * scale) / 2.0)


def render_pose(
    frame: PoseFrame,
    width: int,
    height: int,
    *,
    body: bool = True,
    hands: bool = True,
    face: bool = True,
    scale_geometry: bool = True,
) -> np.ndarray:
    """Render `frame` fitted into a black `height` x `width` RGB uint8 image."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    fit = fit_canvas(frame, width, height)
    geo = Geometry.for_size(width, height, scale_geometry)
    for person in frame.people:
        if body:
            _draw_body(canvas, _apply(person.body, fit), geo)
        if hands:
            _draw_hand(canvas, _apply(person.left_hand, fit), geo)
            _draw_hand(canvas, _apply(person.right_hand, fit), geo)
        if face:
            _draw_face(canvas, _apply(person.face, fit), geo)
    return canvas


def _apply(points: Points | None, fit: Fit) -> Points | None:
    if points is None:
        return None
    return tuple(None if p is None else (p[0] * fit.sx + fit.dx, p[1] * fit.sy + fit.dy) for p in points)


def _draw_body(canvas: np.ndarray, points: Points | None, geo: Geometry) -> None:
    if not points:
        return
    for (a, b), color in zip(LIMBS, COLORS, strict=False):
        p1, p2 = points[a], points[b]
        if p1 is None or p2 is None:
            continue
        mx, my = (p1[0] + p2[0]) / 2, (p1[1] + p2[1]) / 2
        length = math.hypot(p1[0] - p2[0], p1[1] - p2[1])
        angle = math.degrees(math.atan2(p1[1] - p2[1], p1[0] - p2[0]))
        polygon = cv2.ellipse2Poly(
            (int(mx), int(my)), (int(length / 2), geo.stickwidth), int(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(canvas, polygon, [int(float(c) * 0.6) for c in color])
    for point, color in zip(points, COLORS, strict=False):
        if point is None:
            continue
        cv2.circle(canvas, (int(point[0]), int(point[1])), geo.joint_radius, color, thickness=-1)


def _draw_hand(canvas: np.ndarray, points: Points | None, geo: Geometry) -> None:
    if not points:
        return

    def pix(p: tuple[float, float] | None) -> tuple[int, int] | None:
        if p is None:
            return None
        x, y = int(p[0]), int(p[1])
        return (x, y) if x > EPS and y > EPS else None

    px = [pix(p) for p in points]
    for ie, (a, b) in enumerate(HAND_EDGES):
        p1, p2 = px[a], px[b]
        if p1 is None or p2 is None:
            continue
        rgb = colorsys.hsv_to_rgb(ie / float(len(HAND_EDGES)), 1.0, 1.0)
        cv2.line(canvas, p1, p2, [c * 255 for c in rgb], thickness=geo.hand_thickness)
    for p in px:
        if p is not None:
            cv2.circle(canvas, p, geo.hand_joint_radius, HAND_JOINT_COLOR, thickness=-1)


def _draw_face(canvas: np.ndarray, points: Points | None, geo: Geometry) -> None:
    if not points:
        return
    for p in points:
        if p is None:
            continue
        x, y = int(p[0]), int(p[1])
        if x > EPS and y > EPS:
            cv2.circle(canvas, (x, y), geo.face_radius, FACE_COLOR, thickness=-1)
