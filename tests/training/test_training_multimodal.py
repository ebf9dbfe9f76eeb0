"""The tiny demo CLIP / captioner measures (training/mm_data.py, eval_multimodal.py) and the shipped weights.

The metric code is checked on hand-made cases (a perfect scorer earns 1.0, a constant one exactly
chance, a reversed one 0; every swapped caption differs from the true one in exactly its attribute),
and the shipped built-ins on a small fixed set of held-out scenes against floors a bit below the
figures measured on 300 (training/logs/multimodal_eval.json).
"""

from __future__ import annotations

import json

import pytest

from nodegraph_diffusion.paths import BUILTIN_DIR
from training.eval_multimodal import caption_table, eval_caption, eval_clip, parse, truth
from training.mm_data import EVAL_SEED, Candidate, retrieval_table, swapped_captions, world_scenes
from training.world import Scene, SceneObject, sample_scene

MARKER = "training.json"


def _items(count: int = 30) -> list[Candidate]:
    scenes, _ = world_scenes(EVAL_SEED, count, held=True)
    return [Candidate(s.caption, swapped_captions(s)) for s in scenes]


def test_a_perfect_scorer_gets_one_and_a_reversed_one_zero() -> None:
    items = _items()
    perfect = retrieval_table(lambda i, texts: [float(t == items[i].caption) for t in texts], items)
    reversed_ = retrieval_table(lambda i, texts: [-float(t == items[i].caption) for t in texts], items)
    assert {k: v["accuracy"] for k, v in perfect.items()} == {k: 1.0 for k in perfect}
    assert {k: v["accuracy"] for k, v in reversed_.items()} == {k: 0.0 for k in perfect}
    assert perfect["all"]["n"] == 30 and perfect["color"]["n"] + perfect["shirt"]["n"] == 30


def test_a_constant_scorer_gets_exactly_chance() -> None:
    items = _items()
    table = retrieval_table(lambda i, texts: [0.5] * len(texts), items)
    for kind, row in table.items():
        assert row["accuracy"] == pytest.approx(row["chance"], abs=1e-12), kind
    assert table["shape"]["chance"] == pytest.approx(1 / 3) and table["size"]["chance"] == pytest.approx(0.5)


def test_a_scorer_blind_to_one_attribute_is_at_chance_on_it_only() -> None:
    """A scorer that reads everything but the shape (it scores shape variants like the true caption)."""
    items = _items(60)

    def score(i: int, texts: list[str]) -> list[float]:
        shape_blind = {items[i].caption, *items[i].variants.get("shape", [])}
        return [float(t in shape_blind) for t in texts]

    table = retrieval_table(score, items)
    assert table["shape"]["accuracy"] == pytest.approx(1 / 3)
    assert table["color"]["accuracy"] == table["position"]["accuracy"] == table["shirt"]["accuracy"] == 1.0


def test_every_swapped_caption_changes_exactly_its_attribute() -> None:
    fields = {"color": ("color",), "shape": ("shape",), "position": ("position",), "size": ("size",),
              "background": ("background",), "color<->background": ("color", "background"),
              "shirt": ("shirt",), "pants": ("pants",), "shirt<->pants": ("shirt", "pants")}
    seen = set()
    for index in range(80):
        scene = sample_scene(EVAL_SEED, index)
        true = parse(scene.caption)
        assert true, scene.caption
        for kind, variants in swapped_captions(scene).items():
            seen.add(kind)
            assert len(set(variants)) == len(variants)
            for variant in variants:
                got = parse(variant)
                changed = {k for k in true.keys() | got.keys() if true.get(k) != got.get(k)}
                assert changed == set(fields[kind]), (kind, scene.caption, variant)
    assert seen == set(fields)


def test_training_negatives_hold_no_held_out_combination() -> None:
    """A held-out combination seen only as a negative would teach the encoder to rank it last."""
    from dataclasses import replace

    from training.world import held_out

    def as_scene(scene: Scene, fields: dict[str, str]) -> Scene:
        if scene.obj is not None:
            obj = replace(scene.obj, **{k: fields[k] for k in ("color", "shape", "position", "size")})
            return replace(scene, background=fields["background"], obj=obj)
        assert scene.figure is not None
        figure = replace(scene.figure, shirt=fields["shirt"], pants=fields.get("pants", scene.figure.pants))
        return replace(scene, background=fields["background"], figure=figure)

    dropped = 0
    for index in range(200):
        scene = sample_scene(1, index)
        every = {t for v in swapped_captions(scene).values() for t in v}
        kept = {t for v in swapped_captions(scene, skip_held_out=True).values() for t in v}
        for caption in every:
            assert held_out(as_scene(scene, parse(caption))) == (caption not in kept), caption
        dropped += len(every - kept)
    assert dropped > 0


def test_caption_table_scores_each_attribute() -> None:
    scenes, _ = world_scenes(EVAL_SEED, 40, held=True)
    right = caption_table([s.caption for s in scenes], scenes)
    assert all(row["accuracy"] == 1.0 for row in right.values())
    objects = [s for s in scenes if s.obj is not None]
    wrong_shape = [s.caption.replace(s.obj.shape, "circle" if s.obj.shape != "circle" else "square")
                   for s in objects]
    table = caption_table(wrong_shape, objects)
    assert table["shape"]["accuracy"] == 0.0 and table["color"]["accuracy"] == 1.0
    assert table["exact"]["accuracy"] == 0.0 and table["grammatical"]["accuracy"] == 1.0
    garbled = caption_table(["a person in a cyan shirt , black"] * len(objects), objects)
    assert garbled["grammatical"]["accuracy"] == 0.0 and garbled["color"]["accuracy"] == 0.0
    # BERT decoding writes "left , blue": the parser reads it as the grammar's "left, blue"
    red_circle = Scene("blue", "", SceneObject("circle", "red", "big", "on the left", (16.0, 32.0), 12.0))
    assert parse("a big red circle on the left , blue background") == truth(red_circle)


def _measured(name: str) -> dict[str, float]:
    marker = BUILTIN_DIR / name / MARKER
    if not marker.exists():
        pytest.skip(f"builtin {name} is the random model (not shipped by training/)")
    return json.loads(marker.read_text())["floors"]


def test_shipped_tinyclip_ranks_held_out_captions_above_their_swaps() -> None:
    floors = _measured("tinyclip")
    scenes, _ = world_scenes(EVAL_SEED, 40, held=True)
    table = eval_clip(BUILTIN_DIR / "tinyclip", scenes)
    for kind, floor in floors.items():
        assert table[kind]["accuracy"] >= floor, (kind, table)


def test_shipped_tinyblip_names_the_attributes_of_held_out_scenes() -> None:
    floors = _measured("tinyblip")
    scenes, _ = world_scenes(EVAL_SEED, 40, held=True)
    table, _captions = eval_caption(BUILTIN_DIR / "tinyblip", scenes)
    for kind, floor in floors.items():
        assert table[kind]["accuracy"] >= floor, (kind, table)


def test_shipped_tinyblip_vqa_answers_questions_about_held_out_scenes() -> None:
    from training.train_vqa import eval_vqa

    floors = _measured("tinyblip-vqa")
    scenes, _ = world_scenes(EVAL_SEED, 40, held=True)
    table = eval_vqa(BUILTIN_DIR / "tinyblip-vqa", scenes)
    for kind, floor in floors.items():
        assert table[kind]["accuracy"] >= floor, (kind, table)


def test_answer_table_scores_each_question_kind() -> None:
    from training.vqa_data import answer_table, questions

    scenes, _ = world_scenes(EVAL_SEED, 40, held=True)
    truth_of = {(i, q.text): q.answer for i, s in enumerate(scenes) for q in questions(s)}
    right = answer_table(lambda idx, texts: [truth_of[(i, t)] for i, t in zip(idx, texts, strict=True)], scenes)
    assert all(row["accuracy"] == 1.0 for row in right.values())
    assert right["all"]["n"] == sum(len(questions(s)) for s in scenes)
    # always "red": right only where red is the answer; "left" only for places on the left
    red = answer_table(lambda idx, texts: ["red"] * len(idx), scenes)
    assert red["shape"]["accuracy"] == 0.0 and 0.0 < red["background"]["accuracy"] < 0.5
    shape_of = answer_table(lambda idx, texts: [t.split()[-1].rstrip("?") for t in texts], scenes)
    assert shape_of["shape"]["accuracy"] == 0.0 and shape_of["color"]["accuracy"] == 0.0
    assert {q.kind for s in scenes for q in questions(s)} == set(right) - {"all"}
