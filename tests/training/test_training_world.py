"""The procedural world: deterministic per (seed, index), captions in the tokenizer's words, controls."""

from __future__ import annotations

import numpy as np

from nodegraph_diffusion.tiny_tokenizer import WORDS
from training.world import (COLORS, POSITIONS, SHAPES, draw_scene, held_out, make_sample, restyle, sample_scene)


def test_same_seed_and_index_give_the_same_sample() -> None:
    a, b = make_sample(3, 17), make_sample(3, 17)
    assert a.scene == b.scene
    assert np.array_equal(a.image, b.image) and np.array_equal(a.skeleton, b.skeleton)
    assert np.array_equal(a.edges, b.edges)


def test_other_index_or_seed_gives_another_sample() -> None:
    base = make_sample(3, 17)
    assert not np.array_equal(base.image, make_sample(3, 18).image)
    assert not np.array_equal(base.image, make_sample(4, 17).image)


def test_samples_do_not_depend_on_generation_order() -> None:
    forward = [sample_scene(5, i) for i in range(6)]
    backward = [sample_scene(5, i) for i in reversed(range(6))][::-1]
    assert forward == backward


def test_every_caption_word_is_a_tokenizer_word() -> None:
    words = set(WORDS)
    for i in range(200):
        caption = sample_scene(0, i).caption
        for word in caption.replace(",", " ").split():
            assert word in words, (word, caption)


def test_captions_say_what_is_drawn() -> None:
    kinds = set()
    for i in range(100):
        scene = sample_scene(1, i)
        assert scene.caption.endswith(f", {scene.background} background")
        if scene.obj is not None:
            kinds.add("object")
            obj = scene.obj
            assert f"a {obj.size} {obj.color} {obj.shape} {obj.position}," in scene.caption
            assert obj.shape in SHAPES and obj.color in COLORS and obj.position in POSITIONS
            assert obj.color != scene.background
        else:
            kinds.add("figure")
            assert scene.figure is not None
            assert scene.caption.startswith(f"a person in a {scene.figure.shirt} shirt")
    assert kinds == {"object", "figure"}


def test_image_has_the_background_colour_and_a_foreground() -> None:
    from training.world import PALETTE

    sample = make_sample(2, 0)
    img = sample.image
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    corners = [img[0, 0], img[0, -1], img[-1, 0], img[-1, -1]]
    assert sum(tuple(c) == PALETTE[sample.scene.background] for c in corners) >= 3
    assert (np.abs(img.astype(int) - PALETTE[sample.scene.background]).sum(-1) > 60).sum() > 20


def test_skeleton_only_for_figures_and_edges_for_everything() -> None:
    for i in range(30):
        s = make_sample(7, i)
        has_limbs = bool(s.skeleton.any())
        assert has_limbs == (s.scene.figure is not None)
        assert s.edges.any() and set(np.unique(s.edges)) <= {0, 255}


def test_outlined_style_darkens_the_rim_only() -> None:
    scene = next(s for s in (sample_scene(4, i) for i in range(50)) if s.obj is not None and s.background != "black")
    plain, outlined = draw_scene(scene), draw_scene(restyle(scene, "outlined"))
    assert not np.array_equal(plain, outlined)
    assert np.array_equal(plain[:3], outlined[:3]) or scene.obj.position == "at the top"


def test_held_out_is_a_stable_tenth() -> None:
    flags = [held_out(sample_scene(0, i)) for i in range(600)]
    assert 0.04 < np.mean(flags) < 0.2
    assert flags == [held_out(sample_scene(0, i)) for i in range(600)]
