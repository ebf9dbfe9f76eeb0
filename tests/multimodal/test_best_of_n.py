"""graphs/best_of_n.yaml: a batch ranked by CLIP (scores equal to CLIPModel's on the decoded batch), and
over a seed sweep every variant's kept images and scores in manifest.jsonl, and the variants ranked by
their best score (`--rank-by`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from nodegraph import Engine
from nodegraph.cli.app import app
from tests.run_helpers import cpu_options

GRAPH = Path(__file__).resolve().parents[2] / "graphs" / "best_of_n.yaml"
FAST = {"steps": 2, "n": 3, "top_k": 2}


def test_best_of_n_keeps_the_clipmodel_top_k(tmp_path: Path) -> None:
    from nodegraph_diffusion.paths import BUILTIN_DIR
    from nodegraph_multimodal.models import to_pil
    from transformers import CLIPModel, CLIPProcessor

    engine = Engine()
    result = engine.run(GRAPH, FAST, cpu_options(tmp_path / "out"))
    images = result.outputs["images"]["out"]
    folder = BUILTIN_DIR / "tinyclip"
    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    prompt = "a big red circle in the center, blue background"
    with torch.no_grad():
        logits = model(**processor(text=[prompt], images=to_pil(images), return_tensors="pt",
                                   padding=True)).logits_per_image[:, 0]
    values, indices = torch.topk(logits, 2)
    assert result.outputs["best"]["indices"] == indices.tolist()
    assert result.outputs["best"]["scores"] == values.tolist()
    names = sorted(p.name for p in (tmp_path / "out" / "best_of_n").iterdir())
    assert len(names) == 2 and names[0].startswith(f"rank1_img{int(indices[0])}_")
    assert (tmp_path / "out" / "best_of_n_sheet.png").is_file()
    written = json.loads((tmp_path / "out" / "best_of_n_scores.json").read_text())
    assert [r["index"] for r in written] == indices.tolist()
    # a second run takes the ranking from the cache and still writes and reports it
    again = engine.run(GRAPH, FAST, cpu_options(tmp_path / "again"))
    assert "best" in again.cached and any(n.startswith("best_scores: kept #1") for n in again.notes)
    assert (tmp_path / "again" / "best_of_n_scores.json").read_text() == json.dumps(written, indent=1)


def test_a_seed_sweep_records_each_variants_scores_in_the_manifest(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["run", str(GRAPH), "--out", str(out), "--no-cache", "-q", "--sweep", "seed=1,2",
            *(f"--set={k}={v}" for k, v in FAST.items())]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [line["params"]["seed"] for line in lines] == ["1", "2"]
    for line in lines:
        kept = [n for n in line["notes"] if n.startswith("best_scores: kept #1 image")]
        assert len(kept) == 1 and "#2 image" in kept[0] and "score" in kept[0]
        assert sum("/best_of_n/rank" in o["path"] for o in line["outputs"]) == 2
        assert any(o["path"].endswith("/best_of_n_scores.json") for o in line["outputs"])
    assert lines[0]["notes"] != lines[1]["notes"]  # other seeds, other images, other scores


def test_a_seed_sweep_is_ranked_by_each_variants_best_score(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["run", str(GRAPH), "--out", str(out), "--no-cache", "-q", "--sweep", "seed=1,2,3",
            "--rank-by", "best_scores", "--keep", "2", *(f"--set={k}={v}" for k, v in FAST.items())]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = {json.loads(line)["params"]["seed"]: json.loads(line)
             for line in (out / "manifest.jsonl").read_text().splitlines()}
    best = {seed: json.loads((out / next(o["path"] for o in line["outputs"]
                                         if o["path"].endswith("best_of_n_scores.json"))).read_text())[0]
            for seed, line in lines.items()}
    for seed, line in lines.items():  # the manifest's score is the variant's best kept image's
        assert line["scores"] == {"best_scores": best[seed]["score"]}
    ranking = json.loads((out / "ranking.json").read_text())
    order = sorted(best, key=lambda seed: -best[seed]["score"])
    assert ranking["rank_by"] == "best_scores"
    assert [r["params"]["seed"] for r in ranking["variants"]] == order and len(set(order)) == 3
    assert [r["score"] for r in ranking["variants"]] == [best[s]["score"] for s in order]
    assert all((out / r["image"]).is_file() for r in ranking["variants"])
    assert (out / "best_contact_sheet.png").is_file()
    assert f"#1 seed={order[0]}" in result.output and "ranking.json" in result.output


def test_rank_by_a_node_the_graph_lacks_fails_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["run", str(GRAPH), "--out", str(out), "-q", "--sweep", "seed=1,2", "--rank-by", "nope"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--rank-by 'nope' is no node of best_of_n.yaml" in result.output and "best_scores" in result.output
    assert not (out / "manifest.jsonl").exists()
    alone = CliRunner().invoke(app, ["run", str(GRAPH), "--out", str(out), "--rank-by", "best_scores"])
    assert alone.exit_code == 2 and "apply to sweeps" in alone.output
