"""--optimize levels on CPU: outputs within tolerance of eager, model state restored for `none` runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodegraph import Engine, RunOptions

TXT2IMG = Path(__file__).resolve().parents[3] / "graphs" / "txt2img.yaml"
TOLERANCE = 1e-4  # max abs pixel difference ([0, 1] images) against eager, CPU fp32
SET = {"steps": 3, "width": 32, "height": 32}


def _image(engine: Engine, tmp_path: Path, level: str, **extra: object) -> torch.Tensor:
    result = engine.run(TXT2IMG, {**SET, **extra}, RunOptions(out_dir=tmp_path / level, device="cpu",
                                                              optimize=level))
    engine.last_notes = result.notes  # type: ignore[attr-defined]
    return result.outputs["image"]["out"].pixels


def test_basic_is_within_tolerance_and_none_afterwards_is_exact_again(tmp_path: Path) -> None:
    engine = Engine(cache_mb=0)  # no result cache: each level really runs
    eager = _image(engine, tmp_path, "none")
    basic = _image(engine, tmp_path, "basic")
    unet = next(e.value for k, e in engine.resources._entries.items() if k.endswith(":unet"))
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"FusedAttnProcessor2_0"}
    assert 0 < (basic - eager).abs().max().item() <= TOLERANCE  # channels-last: rounding only
    again = _image(engine, tmp_path, "none")
    assert torch.equal(again, eager)  # the shared module is back to its loaded state
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor2_0"}
    assert engine.resources.load_count() == 4  # one copy serves every level


def test_compile_level_reports_its_one_time_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODEGRAPH_COMPILE_BACKEND", "aot_eager")  # graph capture without C++ codegen
    torch._dynamo.reset()
    engine = Engine(cache_mb=0)
    eager = _image(engine, tmp_path, "none")
    compiled = _image(engine, tmp_path, "compile")
    assert (compiled - eager).abs().max().item() <= TOLERANCE
    assert any("compiled the UNet" in n for n in engine.last_notes)  # type: ignore[attr-defined]
    assert any("compiled the VAE decoder" in n for n in engine.last_notes)  # type: ignore[attr-defined]
    _image(engine, tmp_path, "compile", seed=8)
    assert not any("compiled" in n for n in engine.last_notes)  # type: ignore[attr-defined]
    torch._dynamo.reset()


def test_lora_keeps_qkv_unfused(tmp_path: Path) -> None:
    graph = Path(__file__).resolve().parents[3] / "graphs" / "lora.yaml"
    engine = Engine(cache_mb=0)
    result = engine.run(graph, {"steps": 2}, RunOptions(out_dir=tmp_path, device="cpu", optimize="basic"))
    assert any("fused QKV skipped" in n for n in result.notes)
