"""graphs/best_of_n.yaml: a batch ranked by CLIP (scores equal to CLIPModel's on the decoded batch), and
over a seed sweep every variant's kept images and scores in manifest.jsonl."""

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
    assert "best" in again.cached and any(n.startswith("scores_json: kept #1") for n in again.notes)
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
        kept = [n for n in line["notes"] if n.startswith("scores_json: kept #1 image")]
        assert len(kept) == 1 and "#2 image" in kept[0] and "score" in kept[0]
        assert sum("/best_of_n/rank" in o["path"] for o in line["outputs"]) == 2
        assert any(o["path"].endswith("/best_of_n_scores.json") for o in line["outputs"])
    assert lines[0]["notes"] != lines[1]["notes"]  # other seeds, other images, other scores
