"""Models by name before anything runs: ComfyUI roots, extra_model_paths.yaml, the input/ folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from nodegraph_comfyui import ConversionError, import_workflow
from nodegraph_comfyui.model_check import check_models
from nodegraph_diffusion.extra_paths import read_extra_paths
from nodegraph_diffusion.paths import resolve_in
from typer.testing import CliRunner

from nodegraph import Engine
from nodegraph.api import InputError
from nodegraph.cli.app import app

FIXTURES = Path(__file__).parent.parent / "fixtures" / "comfyui"
EXTRA = """\
comfyui:
    base_path: ../elsewhere/
    is_default: true
    checkpoints: models/checkpoints/
    upscale_models: models/upscale_models/
a111:
    base_path: ~/sd-webui-not-here
    loras: |
         models/Lora
         models/LyCORIS
    configs: models/Stable-diffusion
shared:
    controlnet: /abs/controlnets
    vae:
"""


def _comfy_root(tmp_path: Path) -> Path:
    root = tmp_path / "ComfyUI"
    (root / "models" / "checkpoints").mkdir(parents=True)
    (root / "input").mkdir()
    (root / "extra_model_paths.yaml").write_text(EXTRA)
    return root


def test_extra_model_paths_are_read_as_comfyui_reads_them(tmp_path: Path) -> None:
    root = _comfy_root(tmp_path)
    found = read_extra_paths(root / "extra_model_paths.yaml")
    elsewhere = (tmp_path / "elsewhere").resolve()
    webui = Path("~/sd-webui-not-here").expanduser()
    assert found == {
        "checkpoint": [elsewhere / "models" / "checkpoints"],
        "upscale_model": [elsewhere / "models" / "upscale_models"],
        "lora": [webui / "models" / "Lora", webui / "models" / "LyCORIS"],
        "controlnet": [Path("/abs/controlnets")],
    }
    (root / "extra_model_paths.yaml").write_text("comfyui: [1, 2]\n")
    with pytest.raises(InputError, match="extra_model_paths.yaml"):
        read_extra_paths(root / "extra_model_paths.yaml")
    (root / "extra_model_paths.yaml").write_text("comfyui: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(InputError, match="cannot read"):  # safe_load: no objects from the file
        read_extra_paths(root / "extra_model_paths.yaml")


def test_a_model_in_an_extra_folder_is_found_and_one_nowhere_names_every_folder(tmp_path: Path) -> None:
    root = _comfy_root(tmp_path)
    target = tmp_path / "elsewhere" / "models" / "checkpoints" / "far.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert resolve_in("far.safetensors", tmp_path, (root,), "checkpoint") == target.resolve()
    assert resolve_in("far.safetensors", tmp_path, (root / "models",), "checkpoint") == target.resolve()
    with pytest.raises(InputError) as err:
        resolve_in("far.safetensors", tmp_path, (root,), "lora")  # a checkpoint folder is no lora folder
    assert "LyCORIS" in str(err.value) and "extra_model_paths.yaml" in str(err.value)


def test_missing_models_are_all_named_before_the_run(tmp_path: Path) -> None:
    root = _comfy_root(tmp_path)
    file = FIXTURES / "lora_multiple.json"
    graph = import_workflow(file)
    plan = Engine().load(graph, {"lora_2": "nowhere.safetensors"}, file=file)
    with pytest.raises(ConversionError) as err:
        check_models(plan.resolved, file, (root,))
    problems = err.value.problems
    data = json.loads(file.read_text())
    loras = sorted(k for k, v in data.items() if v["class_type"] == "LoraLoader")
    checkpoint = next(k for k, v in data.items() if v["class_type"] == "CheckpointLoaderSimple")
    assert len(problems) == 3  # the checkpoint and both LoRAs (the second as --set), nothing else
    assert f"node '{checkpoint}' (CheckpointLoaderSimple)" in problems[0]
    assert any(
        f"node '{i}' (LoraLoader)" in p and "nowhere.safetensors" in p for p in problems for i in loras
    )
    assert all(str(file) in p for p in problems)
    assert str(root) in problems[0] and "models/checkpoints" in problems[0]
    assert str(tmp_path / "elsewhere" / "models" / "checkpoints") in problems[0]  # the extra folder


def test_validate_with_models_checks_and_run_refuses_before_running(tmp_path: Path) -> None:
    root = _comfy_root(tmp_path)
    file = FIXTURES / "txt2img_default.json"
    result = CliRunner().invoke(app, ["validate", str(file), "--models", str(root)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        "v1-5-pruned-emaonly.safetensors" in result.output
        and "node '4' (CheckpointLoaderSimple)" in result.output
    )
    assert CliRunner().invoke(app, ["validate", str(file)]).exit_code == 0  # no folders given: not checked
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["run", str(file), "--models", str(root), "-q", "--out", str(out)])
    assert run.exit_code == 2 and "CheckpointLoaderSimple" in run.output and not out.exists()


def test_load_image_reads_comfyuis_input_folder(tmp_path: Path) -> None:
    root = _comfy_root(tmp_path)
    shutil.copy(FIXTURES / "inputs" / "pose_present.png", root / "input" / "example.png")
    work = tmp_path / "w"
    work.mkdir()
    shutil.copy(FIXTURES / "img2img.json", work / "img2img.json")
    graph = import_workflow(work / "img2img.json", model_dirs=(root / "models",))
    assert graph["params"]["image"]["default"] == str((root / "input" / "example.png").resolve())
    (work / "example.png").write_bytes((root / "input" / "example.png").read_bytes())
    beside = import_workflow(work / "img2img.json", model_dirs=(root,))
    assert beside["params"]["image"]["default"] == "example.png"  # beside the workflow wins
