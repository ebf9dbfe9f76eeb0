"""The evaluation's image analysis: ground-truth drawings score (nearly) perfectly, noise does not."""

from __future__ import annotations

import numpy as np
import pytest

from training.scoring import (analyse_object, classify_shape, edge_overlap, outline_score, pose_scores,
                              score_text)
from training.world import draw_scene, make_sample, restyle


@pytest.fixture(scope="module")
def samples() -> list:
    return [make_sample(11, i) for i in range(120)]


def _noise(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_drawn_objects_score_every_attribute(samples: list) -> None:
    objects = [s for s in samples if s.scene.obj is not None]
    assert len(objects) > 30
    for s in objects:
        assert all(score_text(s.image, s.scene).values()), (s.scene.caption, analyse_object(s.image))


def test_noise_scores_low_on_text(samples: list) -> None:
    results = [score_text(_noise(i), s.scene) for i, s in enumerate(samples) if s.scene.obj is not None]
    for key in ("background", "color", "position"):
        assert np.mean([r[key] for r in results]) < 0.4, key
    assert np.mean([all(r.values()) for r in results]) < 0.05


def test_shape_classifier_tells_the_three_shapes_apart() -> None:
    import cv2

    for shape in ("circle", "square", "triangle"):
        mask = np.zeros((64, 64), np.uint8)
        if shape == "circle":
            cv2.circle(mask, (30, 34), 11, 1, -1)
        elif shape == "square":
            mask[20:44, 18:40] = 1
        else:
            cv2.fillPoly(mask, [np.array([(32, 14), (50, 46), (14, 46)], np.int32)], 1)
        assert classify_shape(mask.astype(bool)) == shape


def test_drawn_figures_cover_their_skeleton(samples: list) -> None:
    figures = [s for s in samples if s.scene.figure is not None]
    scores = [pose_scores(s.image, s.skeleton) for s in figures]
    assert np.mean([r["coverage"] for r in scores]) > 0.97
    assert np.mean([r["precision"] for r in scores]) > 0.9


def test_noise_is_no_figure(samples: list) -> None:
    figures = [s for s in samples if s.scene.figure is not None]
    scores = [pose_scores(_noise(i), s.skeleton) for i, s in enumerate(figures)]
    assert np.mean([r["precision"] for r in scores]) < 0.6
    flat = np.full((64, 64, 3), 128, np.uint8)
    assert pose_scores(flat, figures[0].skeleton)["coverage"] == 0.0


def test_edge_overlap_is_one_for_the_source_and_low_for_noise(samples: list) -> None:
    assert all(edge_overlap(s.image, s.edges) > 0.99 for s in samples[:20])
    assert np.mean([edge_overlap(_noise(i), s.edges) for i, s in enumerate(samples[:20])]) < 0.4


def test_outline_detector_separates_the_styles(samples: list) -> None:
    plain, outlined = [], []
    for s in samples[:60]:
        if s.scene.background == "black" or (s.scene.obj is not None and s.scene.obj.color == "black"):
            continue
        plain.append(outline_score(s.image))
        outlined.append(outline_score(draw_scene(restyle(s.scene, "outlined"))))
    assert np.mean(plain) < 0.15 < 0.35 < np.mean(outlined)
