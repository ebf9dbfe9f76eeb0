"""clip.score == CLIPModel's logits_per_image (max abs 0); clip.rank keeps the reference top-k; a CLIP
folder without its processor is an input error naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nodegraph import NodeFailed
from tests.multimodal.helpers import batch_nodes, pil_images, run_graph

TEXTS = ["a big red circle in the center, blue background", "a small green square on the left",
         "a person in a yellow shirt"]


def _reference(clip_dir: Path, pictures: list[Path]) -> torch.Tensor:
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(clip_dir, local_files_only=True)
    inputs = processor(text=TEXTS, images=pil_images(pictures), return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**inputs).logits_per_image


def _score_nodes(clip_dir: Path, pictures: list[Path]) -> dict:
    nodes = batch_nodes(pictures)
    nodes["clip"] = {"type": "clip.load", "path": str(clip_dir)}
    nodes["score"] = {"type": "clip.score", "clip": "@clip", "image": "@batch", "texts": TEXTS}
    return nodes


def test_score_equals_clipmodel_logits(clip_dir: Path, pictures: list[Path], tmp_path: Path) -> None:
    result = run_graph(_score_nodes(clip_dir, pictures), tmp_path / "out")
    ours = result.outputs["score"]["out"]
    theirs = _reference(clip_dir, pictures)
    assert ours.values.shape == theirs.shape == (3, 3)
    assert (ours.values - theirs).abs().max().item() == 0.0
    assert float(theirs.std()) > 0  # random but not constant: a wrong pairing would show
    assert ours.texts == tuple(TEXTS)


@pytest.mark.parametrize("text", [0, 2, -1])
def test_rank_keeps_the_reference_top_k(clip_dir: Path, pictures: list[Path], tmp_path: Path,
                                        text: int) -> None:
    nodes = _score_nodes(clip_dir, pictures)
    nodes["rank"] = {"type": "clip.rank", "image": "@batch", "scores": "@score", "top_k": 2, "text": text}
    nodes["sheet"] = {"type": "clip.contact_sheet", "image": "@rank.image", "columns": 2}
    nodes["json"] = {"type": "clip.save_scores", "scores": "@rank.scores", "indices": "@rank.indices"}
    result = run_graph(nodes, tmp_path / "out")
    ref = _reference(clip_dir, pictures)
    column = ref.mean(dim=1) if text < 0 else ref[:, text]
    values, indices = torch.topk(column, 2)
    out = result.outputs["rank"]
    assert out["indices"] == indices.tolist()
    assert out["scores"] == pytest.approx(values.tolist(), abs=0)
    batch = result.outputs["batch"]["out"].pixels
    assert torch.equal(out["image"].pixels, batch[indices])
    assert out["image"].labels[0] == f"rank1_img{indices[0]}_{values[0]:.2f}"
    assert result.outputs["sheet"]["out"].pixels.shape == (1, 3, 48 + 24, 2 * 40)
    notes = " ".join(result.notes)
    assert f"image {int(indices[0])} score {float(values[0]):.4f}" in notes
    written = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert written == [{"rank": n + 1, "index": int(i), "score": float(v)}
                       for n, (i, v) in enumerate(zip(indices, values, strict=True))]


def test_clip_folder_without_processor_is_an_input_error(clip_dir: Path, tmp_path: Path,
                                                         pictures: list[Path]) -> None:
    bare = tmp_path / "bare-clip"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((clip_dir / name).read_bytes())
    with pytest.raises(NodeFailed) as info:
        run_graph(_score_nodes(bare, pictures), tmp_path / "out")
    problem = info.value.problem
    assert (problem.node, problem.field) == ("clip", "path")
    assert "has no processor" in problem.message and "save_pretrained" in problem.message


def test_score_image_is_the_logit_scaled_cosine_of_clip_image_embeds(clip_dir: Path, pictures: list[Path],
                                                                     tmp_path: Path) -> None:
    """Against CLIPModel's own forward: its normalised `image_embeds`, scaled as logits_per_image is."""
    from transformers import CLIPModel, CLIPProcessor

    nodes = batch_nodes(pictures)
    nodes["clip"] = {"type": "clip.load", "path": str(clip_dir)}
    nodes["ref"] = {"type": "core.load_image", "path": str(pictures[1])}
    nodes["score"] = {"type": "clip.score_image", "clip": "@clip", "image": "@batch", "reference": "@ref"}
    nodes["rank"] = {"type": "clip.rank", "image": "@batch", "scores": "@score", "top_k": 1}
    result = run_graph(nodes, tmp_path / "out")
    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(clip_dir, local_files_only=True)
    inputs = processor(text=TEXTS[:1], images=pil_images(pictures), return_tensors="pt", padding=True)
    with torch.no_grad():
        embeds = model(**inputs).image_embeds
    theirs = (torch.matmul(embeds[1:2], embeds.t()) * model.logit_scale.exp()).t()
    ours = result.outputs["score"]["out"].values
    assert ours.shape == (3, 1)
    assert (ours - theirs).abs().max().item() == 0.0
    assert result.outputs["rank"]["indices"] == [1]  # the reference itself is nearest


def test_a_text_past_the_context_is_cut_as_the_tokenizer_cuts_it(clip_dir: Path, pictures: list[Path],
                                                                  tmp_path: Path) -> None:
    """Over 77 tokens: CLIPModel given the processor's `truncation=True` ids (EOS last), not an error."""
    from transformers import CLIPModel, CLIPProcessor

    texts = ["a big red circle " * 30, TEXTS[0]]
    nodes = _score_nodes(clip_dir, pictures)
    nodes["score"]["texts"] = texts
    ours = run_graph(nodes, tmp_path / "out").outputs["score"]["out"].values
    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(clip_dir, local_files_only=True)
    inputs = processor(text=texts, images=pil_images(pictures), return_tensors="pt", padding=True,
                       truncation=True)
    assert inputs["input_ids"].shape[1] == 77
    with torch.no_grad():
        theirs = model(**inputs).logits_per_image
    assert (ours - theirs).abs().max().item() == 0.0
