"""Loading failures say what is missing, where nodegraph looked and which flag helps (issue 16).

Before: a model folder without UNet weights was reported as "refusing to load pickled weights
'…/unet/weights.bin'" (no such file); a model not found suggested `--model-dir` (the flag is
`--models`) and listed the bare name as "searched"; `--allow-pickle` failures printed torch's advice
to pass `weights_only=False`. Each case runs a shipped graph through the CLI.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner, Result

from nodegraph.cli.app import app
from nodegraph.nodes.registry import Registry, build_registry
from nodegraph.runtime.context import RunContext, RunOptions
from nodegraph.runtime.residency import ResidencyManager

GRAPH = Path(__file__).resolve().parents[2] / "graphs" / "txt2img.yaml"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry()


def run(registry: Registry, tmp_path: Path, *args: str) -> Result:
    result = CliRunner().invoke(app, ["run", str(GRAPH), "--out", str(tmp_path / "out"), "--no-cache", "-q",
                                      "--set", "steps=1", *args], obj={"registry": registry})
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
    return result


def one_line(result: Result) -> str:
    return " ".join(result.output.split())


def test_missing_unet_weights_say_what_and_where(registry: Registry, tmp_path: Path, tiny_dir: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    for weights in (model / "unet").glob("*.safetensors"):
        weights.unlink()
    for extra in ([], ["--allow-pickle"]):
        text = one_line(run(registry, tmp_path, "--set", f"model={model}", *extra))
        assert "node 'model', field 'path'" in text
        unet = model / "unet"
        assert f"the model '{model}' is missing its UNet weights: '{unet}' holds no weights file" in text
        assert "found: config.json" in text
        assert "weights.bin" not in text and "refusing" not in text


def test_a_missing_text_encoder_folder_is_named(registry: Registry, tmp_path: Path, tiny_dir: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    shutil.rmtree(model / "text_encoder")
    text = one_line(run(registry, tmp_path, "--set", f"model={model}"))
    assert f"the model '{model}' has no text_encoder folder (looked for '{model / 'text_encoder'}')" in text


def test_load_time_check_names_the_missing_file_not_a_made_up_one(tmp_path: Path, tiny_dir: Path) -> None:
    """The loader itself (weights gone after the handle was made) says the same, without a field."""
    from nodegraph_diffusion.loading import load_unet, make_source

    from nodegraph.errors import InputError

    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    run_ctx = RunContext(RunOptions(device="cpu", dtype="float32"), ResidencyManager(), tmp_path / "s")
    ctx = run_ctx.for_node("sampler", "diffusion.sample")
    source = make_source(model, ctx)
    for weights in (model / "unet").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(InputError) as err:
        load_unet(source, ctx)
    assert "is missing its UNet weights" in err.value.message and "weights.bin" not in err.value.message
    assert err.value.field is None  # the sampler has no 'path' input


def test_model_not_found_lists_real_folders_and_the_real_flag(registry: Registry, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODEGRAPH_MODELS", raising=False)
    text = run(registry, tmp_path, "--set", "model=dreamshaper_8.safetensors").output
    assert "--model-dir" not in text and "pass --models DIR" in text
    assert f"{GRAPH.parent / 'dreamshaper_8.safetensors'}  (beside the graph)" in text
    present, absent = tmp_path / "models", tmp_path / "nowhere"
    present.mkdir()
    text = run(registry, tmp_path, "--set", "model=dreamshaper_8", "--models", str(present),
               "--models", str(absent)).output
    assert f"  {present}\n" in text and f"  {absent}  (does not exist)" in text
    assert "dreamshaper_8.safetensors" in text and "models/checkpoints" in text


@pytest.fixture(scope="module")
def tiny_state(tiny_single_file: Path) -> dict[str, Any]:
    return load_file(tiny_single_file)


def test_allow_pickle_failures_are_explained(registry: Registry, tmp_path: Path,
                                             tiny_state: dict[str, Any]) -> None:
    with_numpy = tmp_path / "numpy.ckpt"
    torch.save({"state_dict": tiny_state, "extra": np.arange(3)}, with_numpy)
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": tiny_state}, truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint " * 8)
    expected = {
        with_numpy: "besides tensors it holds Python objects (numpy",
        truncated: "the file is truncated or corrupt",
        junk: "not a PyTorch checkpoint, or a damaged one",
    }
    for path, words in expected.items():
        text = one_line(run(registry, tmp_path, "--set", f"model={path}", "--allow-pickle"))
        assert f"node 'model', field 'path': cannot read pickled weights '{path}': {words}" in text, text
        assert "weights_only" not in text and "PyTorch 2.6" not in text, text
