"""SDXL LoRA on an SDXL single file (A1111/ComfyUI layout) and through an imported ComfyUI workflow.

The single file is builtin:tinyxl written in the original layout (test_sdxl_single_file); the LoRA is
the Kohya-layout SDXL file of xl_lora_files. On the single file the LoRA gives the folder's pixels; a
ComfyUI `LoraLoader` workflow pointed at them applies it (strength 0 = the workflow without it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from test_sdxl_single_file import write_single_file
from xl_lora_files import TINYXL, to_kohya, write_diffusers_lora

from nodegraph import Engine, RunOptions

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
COMFY = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ComfyUI-style models folder: checkpoints/sd_xl_base_1.0.safetensors, loras/xl_style.safetensors."""
    root = tmp_path_factory.mktemp("xl_models")
    (root / "checkpoints").mkdir()
    (root / "loras").mkdir()
    write_single_file(TINYXL, root / "checkpoints" / "sd_xl_base_1.0.safetensors")
    peft = write_diffusers_lora(root / "peft" / "xl.safetensors", seed=4)
    to_kohya(peft, root / "loras" / "xl_style.safetensors")
    shutil.rmtree(root / "peft")
    return root


def options(out: Path, models: Path) -> RunOptions:
    return RunOptions(out_dir=out, device="cpu", dtype="float32", show_progress=False, model_dirs=(models,))


def pixels(result: Any) -> torch.Tensor:
    return result.outputs["image"]["out"].pixels


def test_lora_on_the_single_file_gives_the_folders_pixels(tmp_path: Path, models: Path) -> None:
    engine = Engine(cache_mb=256)
    params = {"lora": "xl_style.safetensors", "lora_weight": 0.9, "steps": 3, "scheduler": "euler",
              "cfg": 4.0}
    single = engine.run(GRAPHS / "lora.yaml", {**params, "model": "sd_xl_base_1.0.safetensors"},
                        options=options(tmp_path / "a", models))
    folder = engine.run(GRAPHS / "lora.yaml", {**params, "model": str(TINYXL)},
                        options=options(tmp_path / "b", models))
    plain = engine.run(GRAPHS / "lora.yaml", {**params, "model": str(TINYXL), "lora_weight": 0.0},
                       options=options(tmp_path / "c", models))
    assert (pixels(single) - pixels(folder)).abs().max().item() == 0.0
    assert (pixels(folder) - pixels(plain)).abs().max().item() > 1e-2  # the LoRA acts


def test_comfyui_lora_loader_on_an_sdxl_checkpoint(tmp_path: Path, models: Path) -> None:
    from nodegraph_comfyui import import_workflow

    engine = Engine(cache_mb=256)

    def run(name: str, out: str, **sets: Any) -> torch.Tensor:
        file = COMFY / f"{name}.json"
        values = {"checkpoint": "sd_xl_base_1.0.safetensors", "width": "64", "height": "64", "steps": "2",
                  **{k: str(v) for k, v in sets.items()}}
        plan = engine.load(import_workflow(file), values, file=file)
        return pixels(engine.run(plan, options=options(tmp_path / out, models)))

    lora = {"lora": "xl_style.safetensors"}
    on = run("lora_single", "a", **lora)
    off = run("lora_single", "b", **lora, lora_strength=0, lora_clip_strength=0)
    unet_only = run("lora_single", "c", **lora, lora_clip_strength=0)
    seed = import_workflow(COMFY / "lora_single.json")["params"]["seed"]["default"]
    base = run("txt2img_default", "d", prompt="masterpiece best quality girl", negative="bad hands",
               seed=seed)
    assert (off - base).abs().max().item() == 0.0  # strength 0 = no LoRA, bit for bit
    assert (on - off).abs().max().item() > 1e-2
    assert (on - unet_only).abs().max().item() > 1e-3  # strength_clip reaches the SDXL text encoders
