"""`--optimize compile` on the CPU is warned about before anything compiles, and `basic` recommended;
checked without compiling (the compile step is replaced by the eager module)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nodegraph import Engine, RunOptions
from nodegraph.cli.app import app
from nodegraph.runtime.advice import compile_advice

GRAPHS = Path(__file__).resolve().parents[3] / "graphs"


def test_advice_is_for_compiling_levels_on_the_cpu_only() -> None:
    for level in ("compile", "max"):
        text = compile_advice(level, "cpu")
        assert text is not None and f"--optimize {level} on the CPU" in text
        assert "--optimize basic is the CPU recommendation" in text
        assert compile_advice(level, "cuda") is None
    assert compile_advice("basic", "cpu") is None and compile_advice(None, "cpu") is None


def test_cli_warns_before_running(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(GRAPHS / "core_text.yaml"), "--out", str(tmp_path),
                                      "--device", "cpu", "--optimize", "compile", "-q"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "warning: --optimize compile on the CPU" in flat and "--optimize basic is the CPU" in flat
    quiet = CliRunner().invoke(app, ["run", str(GRAPHS / "core_text.yaml"), "--out", str(tmp_path / "b"),
                                     "--device", "cpu", "--optimize", "basic", "-q"])
    assert quiet.exit_code == 0 and "warning" not in quiet.output


def test_the_run_notes_it_once_before_the_first_compile(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from nodegraph_diffusion import optimize

    compiled: list[object] = []

    def no_compile(model: object, level: str, device: object) -> object:
        compiled.append(model)
        return model  # the eager module stands in for the compiled one

    monkeypatch.setattr(optimize, "_compile", no_compile)
    engine = Engine(cache_mb=0)
    options = RunOptions(out_dir=tmp_path, device="cpu", optimize="compile", show_progress=False)
    first = engine.run(GRAPHS / "txt2img.yaml", {"steps": 1, "width": 32, "height": 32}, options=options)
    assert compiled, "the compile step was reached (and stood in for)"
    assert [n for n in first.notes if "--optimize compile on the CPU" in n]
    again = engine.run(GRAPHS / "txt2img.yaml", {"steps": 1, "width": 32, "height": 32, "seed": 3},
                       options=options)
    assert not [n for n in again.notes if "on the CPU" in n]  # compiled already: nothing left to pay
    assert isinstance(first.outputs["image"]["out"].pixels, torch.Tensor)
