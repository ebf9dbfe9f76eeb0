"""`nodegraph import comfyui`, and `run`/`validate` recognising ComfyUI files (JSON and PNG)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from nodegraph.cli.app import app
from tests.comfyui.test_run import SMALL, comfy_models  # noqa: F401  (the session fixture)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FIXTURES = Path(__file__).parent.parent / "fixtures" / "comfyui"


def test_import_writes_a_graph_that_loads(tmp_path: Path) -> None:
    from nodegraph_comfyui import import_workflow

    out = tmp_path / "g.yaml"
    result = CliRunner().invoke(app, ["import", "comfyui", str(FIXTURES / "ui_img2img.json"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text()) == import_workflow(FIXTURES / "ui_img2img.json")
    assert "imported ComfyUI workflow" in result.output
    printed = CliRunner().invoke(app, ["import", "comfyui", str(FIXTURES / "img2img.json")])
    assert printed.exit_code == 0 and printed.output.startswith("version: 1\n")


def test_import_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    sd3 = FIXTURES / "controlnet_advanced_sd35_canny.json"
    result = CliRunner().invoke(app, ["import", "comfyui", str(sd3)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "'EmptySD3LatentImage'" in result.output and "node '33'" in result.output
    unknown = CliRunner().invoke(app, ["import", "krita", str(FIXTURES / "img2img.json")])
    assert unknown.exit_code == 2 and "comfyui" in unknown.output
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(app, ["import", "comfyui", str(bad)])
    assert result.exit_code == 2 and "not valid JSON" in result.output


def test_validate_reads_comfyui_files() -> None:
    result = CliRunner().invoke(
        app,
        ["validate", str(FIXTURES / "lora_single.json"),
         str(FIXTURES / "controlnet_advanced_sd35_canny.json")],
    )
    assert result.exit_code == 2
    assert f"OK {FIXTURES / 'lora_single.json'}" in result.output
    assert "EmptySD3LatentImage" in result.output and "is a ComfyUI workflow" in result.output


def test_run_detects_comfyui_json_and_png(tmp_path: Path, comfy_models: Path) -> None:  # noqa: F811
    from PIL import Image as PILImage
    from PIL.PngImagePlugin import PngInfo

    sets = [arg for k, v in SMALL.items() for arg in ("--set", f"{k}={v}")]
    args = ["--models", str(comfy_models), "--no-cache", "-q"]
    result = CliRunner().invoke(
        app, ["run", str(FIXTURES / "txt2img_default.json"), *sets, *args, "--out", str(tmp_path / "a")]
    )
    assert result.exit_code == 0, result.output
    assert "is a ComfyUI workflow: running it through `nodegraph import comfyui`" in result.output
    assert (tmp_path / "a" / "ComfyUI_save.png").is_file()
    png = tmp_path / "ComfyUI_00001_.png"  # what ComfyUI's SaveImage writes: both chunks
    info = PngInfo()
    info.add_text("prompt", (FIXTURES / "txt2img_default.json").read_text())
    info.add_text("workflow", (FIXTURES / "ui_default_template_modern.json").read_text())
    PILImage.new("RGB", (8, 8)).save(png, pnginfo=info)
    result = CliRunner().invoke(app, ["run", str(png), *sets, *args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    first = PILImage.open(tmp_path / "a" / "ComfyUI_save.png").convert("RGB").tobytes()
    assert PILImage.open(tmp_path / "b" / "ComfyUI_save.png").convert("RGB").tobytes() == first


def test_missing_model_names_node_file_and_folders(tmp_path: Path, comfy_models: Path) -> None:  # noqa: F811
    data = json.loads((FIXTURES / "txt2img_default.json").read_text())
    data["4"]["inputs"]["ckpt_name"] = "dreamshaper_8.safetensors"
    file = tmp_path / "w.json"
    file.write_text(json.dumps(data))
    result = CliRunner().invoke(
        app,
        ["run", str(file), "--models", str(comfy_models), "--no-cache", "-q", "--out", str(tmp_path / "out")],
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "dreamshaper_8.safetensors" in result.output and "'checkpoint'" in result.output
    assert str(comfy_models) in result.output and "checkpoints" in result.output  # the folders searched


def test_sweep_on_a_comfyui_file_says_to_import_first(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "txt2img_default.json", tmp_path / "w.json")
    result = CliRunner().invoke(
        app, ["run", str(tmp_path / "w.json"), "--sweep", "seed=1..2", "-q", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2 and "nodegraph import comfyui" in result.output
