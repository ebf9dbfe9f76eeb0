"""Scores for generated images, by image analysis the project does itself (no learned judges).

Everything works on uint8 RGB images (H, W, 3) of the world's look: a flat background, one object or
one figure. The background colour is the median of the image border; the foreground is every pixel
far from it; colours are named by the nearest palette entry; shapes are told apart by which ideal
silhouette (circle, square, triangle) fitted to the object's bounding box overlaps it best.
"""

from __future__ import annotations

import cv2
import numpy as np

from training.world import PALETTE, POSITIONS, Scene, edge_map

FOREGROUND_DISTANCE = 70.0  # RGB distance from the background colour that counts as foreground


def nearest_color(rgb: np.ndarray) -> str:
    """Name of the palette colour nearest to `rgb`."""
    names = list(PALETTE)
    table = np.array([PALETTE[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(((table - np.asarray(rgb, dtype=np.float32)) ** 2).sum(1)))]


def background_rgb(image: np.ndarray, border: int = 2) -> np.ndarray:
    """Median colour of the image's border band."""
    h, w = image.shape[:2]
    band = np.ones((h, w), dtype=bool)
    band[border:h - border, border:w - border] = False
    return np.median(image[band].reshape(-1, 3), axis=0)


def foreground_mask(image: np.ndarray, bg: np.ndarray | None = None) -> np.ndarray:
    """Pixels far from the background colour."""
    bg = background_rgb(image) if bg is None else bg
    dist = np.sqrt(((image.astype(np.float32) - bg.astype(np.float32)) ** 2).sum(-1))
    return dist > FOREGROUND_DISTANCE


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of `mask` (empty if there is none)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def shape_templates(mask: np.ndarray) -> dict[str, np.ndarray]:
    """The ideal circle, square and triangle filling the mask's bounding box."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    h, w = mask.shape
    out = {}
    circle = np.zeros((h, w), np.uint8)
    box = ((float(x0 + x1) / 2 - 0.5, float(y0 + y1) / 2 - 0.5), (float(x1 - x0), float(y1 - y0)), 0.0)
    cv2.ellipse(circle, box, 1, -1)
    out["circle"] = circle.astype(bool)
    square = np.zeros((h, w), bool)
    square[y0:y1, x0:x1] = True
    out["square"] = square
    tri = np.zeros((h, w), np.uint8)
    cv2.fillPoly(tri, [np.array([(round((x0 + x1 - 1) / 2), y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], np.int32)], 1)
    out["triangle"] = tri.astype(bool)
    return out


def classify_shape(mask: np.ndarray) -> str:
    """'circle', 'square' or 'triangle': the ideal silhouette in the bounding box with the best IoU."""
    if mask.sum() < 4:
        return "none"
    scores = {name: (t & mask).sum() / max((t | mask).sum(), 1) for name, t in shape_templates(mask).items()}
    return max(scores, key=lambda k: scores[k])


def classify_position(mask: np.ndarray) -> str:
    """The caption position phrase whose anchor is nearest to the mask's centroid."""
    if not mask.any():
        return "none"
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    cx, cy = xs.mean() / w, ys.mean() / h
    return min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)


def object_color(image: np.ndarray, mask: np.ndarray) -> str:
    """Palette name of the object's median colour (its eroded interior, to skip soft edges)."""
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    pixels = image[inner if inner.sum() >= 4 else mask]
    return nearest_color(np.median(pixels.reshape(-1, 3), axis=0)) if len(pixels) else "none"


def analyse_object(image: np.ndarray) -> dict[str, str]:
    """What the image shows: background colour, and the main object's colour, shape and position."""
    bg = background_rgb(image)
    mask = largest_component(foreground_mask(image, bg))
    return {"background": nearest_color(bg), "color": object_color(image, mask), "shape": classify_shape(mask),
            "position": classify_position(mask)}


def score_text(image: np.ndarray, scene: Scene) -> dict[str, bool]:
    """Per attribute: does the image show what the object caption asked for?"""
    found = analyse_object(image)
    result = {"background": found["background"] == scene.background}
    if scene.obj is not None:
        result.update(color=found["color"] == scene.obj.color, shape=found["shape"] == scene.obj.shape,
                      position=found["position"] == scene.obj.position)
    return result


def limb_pixels(skeleton: np.ndarray) -> np.ndarray:
    """Pixels the skeleton drawing covers (anything not black)."""
    return skeleton.max(-1) > 0


def pose_scores(image: np.ndarray, skeleton: np.ndarray, tolerance: int = 1, reach: int = 5) -> dict[str, float]:
    """How well the generated figure follows the skeleton.

    coverage: fraction of the skeleton's limb pixels that lie on the foreground (within `tolerance` px);
    precision: fraction of the foreground within `reach` px of the skeleton (a figure, not a blob
    covering the whole image — noise has coverage 1 but precision near the skeleton's share).
    """
    limbs = limb_pixels(skeleton)
    if not limbs.any():
        return {"coverage": float("nan"), "precision": float("nan")}
    figure = foreground_mask(image).astype(np.uint8)
    grown = cv2.dilate(figure, np.ones((2 * tolerance + 1,) * 2, np.uint8)) if tolerance else figure
    near = cv2.dilate(limbs.astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8)).astype(bool)
    coverage = float((grown.astype(bool) & limbs).sum() / limbs.sum())
    precision = float((figure.astype(bool) & near).sum() / max(int(figure.sum()), 1))
    return {"coverage": coverage, "precision": precision}


def edge_overlap(image: np.ndarray, control_edges: np.ndarray, tolerance: int = 1) -> float:
    """F1 of the generated image's Canny edges against the control edges, matching within `tolerance` px."""
    ours = edge_map(image).max(-1) > 0
    target = control_edges.max(-1) > 0
    if not target.any():
        return float("nan")
    kernel = np.ones((2 * tolerance + 1,) * 2, np.uint8)
    near_ours = cv2.dilate(ours.astype(np.uint8), kernel).astype(bool)
    near_target = cv2.dilate(target.astype(np.uint8), kernel).astype(bool)
    recall = (target & near_ours).sum() / target.sum()
    precision = (ours & near_target).sum() / max(ours.sum(), 1)
    return float(0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision))


def outline_score(image: np.ndarray, band: int = 2) -> float:
    """The 'outlined' style detector: how dark the foreground's rim is (0 = like the fill, 1 = black).

    Takes the pixels within `band` px inside the border of the non-background region and compares
    their luminance with the region's interior: an outline makes the rim much darker than the fill.
    """
    bg = background_rgb(image)
    dist = np.sqrt(((image.astype(np.float32) - bg.astype(np.float32)) ** 2).sum(-1))
    mask = (dist > 40).astype(np.uint8)
    if mask.sum() < 8:
        return 0.0
    inner = cv2.erode(mask, np.ones((2 * band + 1,) * 2, np.uint8))
    rim = mask.astype(bool) & ~inner.astype(bool)
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    fill = float(np.median(luma[inner.astype(bool)])) if inner.any() else float(np.median(luma[mask.astype(bool)]))
    rim_luma = float(np.median(luma[rim])) if rim.any() else fill
    return float(np.clip((fill - rim_luma) / max(fill, 1.0), 0.0, 1.0))
