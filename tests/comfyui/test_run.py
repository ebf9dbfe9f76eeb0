"""ComfyUI workflows run end to end on tiny models placed in a ComfyUI-style model folder, under the
file names the workflows use (pickled `.ckpt` names get a pickled tiny checkpoint: --allow-pickle)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURES = Path(__file__).parent.parent / "fixtures" / "comfyui"
ROOT = Path(__file__).parent.parent.parent
SMALL = {"width": 64, "height": 64, "steps": 2}
CHECKPOINTS = [
    "v1-5-pruned-emaonly.safetensors",
    "v1-5-pruned-emaonly.ckpt",
    "Anything-V3.0.ckpt",
    "AOM3A1.safetensors",
    "AOM3A3.safetensors",
    "v2-1_768-ema-pruned.ckpt",
    "512-inpainting-ema.safetensors",  # a 9-channel model in reality; the 4-channel tiny one here
    "Juggernaut_RunDiffusionPhoto2_Lightning_4Steps.safetensors",
]
SDXL = {"sd_xl_base_1.0.safetensors": "tinyxl", "sd_xl_refiner_1.0.safetensors": "tinyxl-refiner"}
UPSCALERS = ["RealESRGAN_x4plus.pth"]  # pickled, as published: the runs allow pickle
VAES = ["kl-f8-anime2.ckpt", "vae-ft-mse-840000-ema-pruned.safetensors"]
LORAS = ["epiNoiseoffset_v2.safetensors", "theovercomer8sContrastFix_sd15.safetensors"]
CONTROLNETS = {
    "control_openpose.safetensors": "tinyworld-pose",
    "control_scribble.safetensors": "tinyworld-edge",
}


@pytest.fixture(scope="session")
def comfy_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/{checkpoints,vae,loras,controlnet} holding tiny models under the workflows' names."""
    import torch
    from nodegraph_diffusion.paths import BUILTIN_DIR
    from nodegraph_diffusion.tiny import save_single_file
    from safetensors.torch import load_file

    root = tmp_path_factory.mktemp("comfy") / "models"
    single = save_single_file(BUILTIN_DIR / "tinyworld", root / "tiny.safetensors")
    for folder, names in (("checkpoints", CHECKPOINTS), ("vae", VAES)):
        (root / folder).mkdir(parents=True)
        for name in names:
            if name.endswith(".ckpt"):
                torch.save({"state_dict": load_file(single)}, root / folder / name)
            else:
                shutil.copy(single, root / folder / name)
    (root / "loras").mkdir()
    for i, name in enumerate(LORAS):
        state = load_file(BUILTIN_DIR / "tinyworld-style" / "tinyworld-style.safetensors")
        from safetensors.torch import save_file

        save_file({k: v * (1 + i) for k, v in state.items()}, root / "loras" / name)
    (root / "controlnet").mkdir()
    for name, builtin in CONTROLNETS.items():
        shutil.copy(BUILTIN_DIR / builtin / "diffusion_pytorch_model.safetensors", root / "controlnet" / name)
        shutil.copy(BUILTIN_DIR / builtin / "config.json", root / "controlnet" / (Path(name).stem + ".json"))
    from tests.diffusion.test_sdxl_single_file import write_single_file

    for name, builtin in SDXL.items():
        write_single_file(BUILTIN_DIR / builtin, root / "checkpoints" / name)
    from tests.spandrel_helper import save_tiny_esrgan, spandrel

    spandrel()  # importable for the upscale runs (a stand-in torchvision where none loads)
    for name in UPSCALERS:
        save_tiny_esrgan(root / "upscale_models" / name)
    return root


@pytest.fixture(scope="module")
def engine() -> Any:
    from nodegraph import Engine

    return Engine()


def _workdir(tmp_path: Path, name: str) -> Path:
    """The workflow copied beside the input images it names (ComfyUI's input/ folder)."""
    work = tmp_path / "work"
    shutil.copytree(FIXTURES / "inputs", work)
    shutil.copy(FIXTURES / f"{name}.json", work / f"{name}.json")
    from PIL import Image as PILImage

    PILImage.new("RGB", (64, 64), (200, 40, 40)).save(work / "example.png")  # img2img's input
    hole = PILImage.new("RGBA", (64, 64), (40, 120, 200, 255))
    hole.paste((0, 0, 0, 0), (16, 16, 40, 48))  # transparent: LoadImage's mask repaints it
    hole.save(work / "yosemite_inpaint_example.png")
    PILImage.new("RGB", (48, 32), (90, 160, 60)).save(work / "yosemite_outpaint_example.png")
    PILImage.new("RGB", (64, 64), (120, 90, 60)).save(work / "placeholder.png")
    mask = PILImage.new("RGB", (64, 64), (0, 0, 0))
    mask.paste((255, 0, 0), (20, 20, 44, 44))  # LoadImageMask reads its red channel
    mask.save(work / "placeholder_mask.png")
    return work / f"{name}.json"


def _run(engine: Any, file: Path, models: Path, out: Path, **sets: Any) -> Any:
    from nodegraph_comfyui import import_workflow

    from nodegraph import RunOptions

    graph = import_workflow(file)
    plan = engine.load(graph, {k: str(v) for k, v in sets.items()}, file=file)
    return engine.run(
        plan,
        options=RunOptions(
            out_dir=out, device="cpu", dtype="float32", allow_pickle=True, model_dirs=(models,)
        ),
    )


def test_imported_txt2img_equals_the_txt2img_graph(engine: Any, comfy_models: Path, tmp_path: Path) -> None:
    """graphs/txt2img.yaml with its diffusers scheduler swapped for the k-sampler the workflow names
    (euler / normal): the same sampler semantics, so the same pixels."""
    import yaml

    from nodegraph import RunOptions

    ours = _run(engine, FIXTURES / "txt2img_default.json", comfy_models, tmp_path / "a", **SMALL)
    model = comfy_models / "checkpoints" / "v1-5-pruned-emaonly.safetensors"
    graph = yaml.safe_load((ROOT / "graphs" / "txt2img.yaml").read_text())
    graph["params"].pop("scheduler")
    graph["nodes"]["scheduler"] = {"type": "diffusion.k_sampler", "model_scheduler": "@model.scheduler",
                                   "sampler": "euler", "scheduler": "normal"}
    sets = {"model": str(model), "prompt": "masterpiece best quality girl", "negative": "bad hands",
            "seed": 8566257, "steps": 2, "cfg": 8.0, "width": 64, "height": 64}
    plan = engine.load(graph, {k: str(v) for k, v in sets.items()}, file=ROOT / "graphs" / "txt2img.yaml")
    theirs = engine.run(plan, options=RunOptions(out_dir=tmp_path / "b", device="cpu", dtype="float32"))
    a, b = ours.outputs["image"]["out"].pixels, theirs.outputs["image"]["out"].pixels
    assert a.shape == (1, 3, 64, 64) and (a - b).abs().max().item() == 0.0
    assert (tmp_path / "a" / "ComfyUI_save.png").is_file()
    diffusers_euler = engine.run(ROOT / "graphs" / "txt2img.yaml", {**sets, "scheduler": "euler"},
                                 options=RunOptions(out_dir=tmp_path / "c", device="cpu", dtype="float32"))
    assert (a - diffusers_euler.outputs["image"]["out"].pixels).abs().max().item() > 1e-3  # not diffusers'


AREA = {"width": 128, "height": 128, "area_width": 64, "area_height": 64, "area_x": 0, "area_y": 32,
        "steps": 2, "upscale_width": 160, "upscale_height": 160, "steps_2": 2}


@pytest.mark.parametrize(
    "name, sets",
    [
        ("img2img", {"steps": 2}),
        ("lora_single", SMALL),
        ("lora_multiple", SMALL),
        ("controlnet_scribble", SMALL),
        ("controlnet_multi_pose_scribble", SMALL),
        ("controlnet_pose_2pass_hires", {**SMALL, "upscale_width": 96, "upscale_height": 96, "steps_2": 2}),
        ("hiresfix_latent_upscale", {**SMALL, "upscale_width": 96, "upscale_height": 96, "steps_2": 2}),
        ("ui_img2img", {"steps": 2}),
        ("inpaint_vae_encode_for_inpaint", {"steps": 2}),
        ("outpaint_pad_for_outpaint", {"steps": 2, "pad_top": 16, "pad_bottom": 16}),
        ("edge_string_node_ids_inpaint", {"steps": 2}),
        ("hiresfix_esrgan_pixel_upscale", {**SMALL, "steps_2": 2, "image_width": 128, "image_height": 128}),
        ("sdxl_base_refiner_ksampler_advanced", {"width": 64, "height": 64}),
        ("area_composition", AREA),
    ],
)
def test_sd15_workflows_run_end_to_end(
    name: str, sets: dict[str, Any], engine: Any, comfy_models: Path, tmp_path: Path
) -> None:
    result = _run(engine, _workdir(tmp_path, name), comfy_models, tmp_path / "out", **sets)
    assert result.written and all(Path(p).suffix == ".png" for p in result.written)


def test_lora_strength_changes_the_image(engine: Any, comfy_models: Path, tmp_path: Path) -> None:
    file = FIXTURES / "lora_single.json"
    on = _run(engine, file, comfy_models, tmp_path / "a", **SMALL).outputs["image"]["out"].pixels
    off = _run(engine, file, comfy_models, tmp_path / "b", **SMALL, lora_strength=0, lora_clip_strength=0)
    base = _run(
        engine,
        FIXTURES / "txt2img_default.json",
        comfy_models,
        tmp_path / "c",
        **SMALL,
        checkpoint="v1-5-pruned-emaonly.ckpt",
        prompt="masterpiece best quality girl",
        negative="bad hands",
        seed=on_seed(file),
    )
    off_pixels = off.outputs["image"]["out"].pixels
    assert (on - off_pixels).abs().max().item() > 1e-3
    assert (off_pixels - base.outputs["image"]["out"].pixels).abs().max().item() == 0.0


def on_seed(file: Path) -> int:
    import json

    data = json.loads(file.read_text())
    return int(next(v["inputs"]["seed"] for v in data.values() if v["class_type"] == "KSampler"))
