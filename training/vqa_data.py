"""Questions about tinyworld scenes, their answers, and how a question-answering model is scored on them.

Every attribute the world draws has one question with a one-word answer, so an answer is right or
wrong without parsing: object scenes are asked the object's colour, shape, place, size and the
background; figure scenes the shirt, the pants (always drawn, even when the caption leaves them out)
and the background. The questions name the object by its shape where the answer is not the shape, as
a user would ("what colour is the circle?"), so the model must find the thing named and read it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from training.world import COLORS, POSITIONS, SHAPES, SIZES, Scene

# the one-word answer for each caption place phrase ("on the left" -> "left")
PLACE = {phrase: phrase.split()[-1] for phrase in POSITIONS}
# chance of a uniform guess among the answers of each kind (object colour and shirt avoid the background)
CHANCE = {"color": 1 / 9, "shape": 1 / len(SHAPES), "position": 1 / len(POSITIONS), "size": 1 / len(SIZES),
          "background": 1 / len(COLORS), "shirt": 1 / 9, "pants": 1 / len(COLORS)}


@dataclass(frozen=True)
class Question:
    """One question about one scene, with the attribute it asks and the right answer."""

    kind: str
    text: str
    answer: str


def questions(scene: Scene) -> list[Question]:
    """Every question the grammar asks of the scene."""
    if scene.obj is not None:
        o = scene.obj
        return [Question("color", f"what colour is the {o.shape}?", o.color),
                Question("shape", "what shape is in the picture?", o.shape),
                Question("position", f"where is the {o.shape}?", PLACE[o.position]),
                Question("size", f"what size is the {o.shape}?", o.size),
                Question("background", "what colour is the background?", scene.background)]
    assert scene.figure is not None
    return [Question("shirt", "what colour is the shirt?", scene.figure.shirt),
            Question("pants", "what colour are the pants?", scene.figure.pants),
            Question("background", "what colour is the background?", scene.background)]


# answer(scene indices, question texts) -> one answer per pair
Answerer = Callable[[list[int], list[str]], Sequence[str]]


def answer_table(answer: Answerer, scenes: Sequence[Scene]) -> dict[str, dict[str, float]]:
    """Accuracy of exact one-word answers per question kind and over all ("all"), with chance and n.

    The pairs go to `answer` grouped by question text, so a batched model sees no padded questions
    (BLIP's generate() attends to every question position, padding included)."""
    asked = [(i, q) for i, s in enumerate(scenes) for q in questions(s)]
    by_text: dict[str, list[tuple[int, Question]]] = {}
    for i, q in asked:
        by_text.setdefault(q.text, []).append((i, q))
    hits: dict[str, list[float]] = {}
    chance: dict[str, list[float]] = {}
    for text, rows in by_text.items():
        got = answer([i for i, _ in rows], [text] * len(rows))
        for (_, q), a in zip(rows, got, strict=True):
            hit = float(a.strip().lower() == q.answer)
            hits.setdefault(q.kind, []).append(hit)
            hits.setdefault("all", []).append(hit)
            chance.setdefault(q.kind, []).append(CHANCE[q.kind])
            chance.setdefault("all", []).append(CHANCE[q.kind])
    order = [k for k in (*CHANCE, "all") if k in hits]
    return {k: {"accuracy": float(np.mean(hits[k])), "chance": float(np.mean(chance[k])), "n": len(hits[k])}
            for k in order}
