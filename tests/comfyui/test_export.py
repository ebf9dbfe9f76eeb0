"""`nodegraph export comfyui`: API-format JSON, and import -> export -> import is the identity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from nodegraph_comfyui import ConversionError, import_workflow
from nodegraph_comfyui.export import export_graph
from nodegraph_comfyui.importer import collect, convert_workflow
from nodegraph_comfyui.workflow import read_workflow
from typer.testing import CliRunner

from nodegraph import Engine
from nodegraph.cli.app import app

FIXTURES = Path(__file__).parent.parent / "fixtures" / "comfyui"
ROOT = Path(__file__).parent.parent.parent
SD15 = [
    "txt2img_default",
    "img2img",
    "lora_single",
    "lora_multiple",
    "controlnet_scribble",
    "controlnet_multi_pose_scribble",
    "controlnet_pose_2pass_hires",
    "hiresfix_latent_upscale",
    "edge_subgraph_node_ids_dangling_node",
    "ui_img2img",
    "ui_controlnet_multi_pose_scribble",
    "edge_string_node_ids_inpaint",
    "area_composition",
]
# these sample with uni_pc_bh2, which imports as diffusers' unipc and exports back as uni_pc (samplers.py)
UNIPC_BH2 = ["inpaint_vae_encode_for_inpaint", "outpaint_pad_for_outpaint", "hiresfix_esrgan_pixel_upscale"]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


def _body(graph: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in graph.items() if k not in ("description", "metadata")}


@pytest.mark.parametrize("name", [*SD15, "sdxl_base_refiner_ksampler_advanced"])
def test_import_export_import_is_identity(name: str, engine: Engine) -> None:
    file = FIXTURES / f"{name}.json"
    first = import_workflow(file)
    prompt = json.loads(json.dumps(export_graph(engine.load(first, file=file).resolved)))
    assert all(set(node) == {"class_type", "inputs"} for node in prompt.values())
    mappings = collect(providers=[])
    again = convert_workflow(
        read_workflow(prompt, {k: m.widgets for k, m in mappings.classes.items()}, "x"), mappings
    )
    assert _body(again) == _body(first)


def test_clip_skip_and_controls_unfold(engine: Engine) -> None:
    file = FIXTURES / "controlnet_pose_2pass_hires.json"
    prompt = export_graph(engine.load(import_workflow(file), file=file).resolved)
    classes = sorted(n["class_type"] for n in prompt.values())
    original = sorted(v["class_type"] for v in json.loads(file.read_text()).values())
    assert classes == original  # the same ComfyUI nodes come back, CLIPSetLastLayer and ControlNetApply too


def test_nodes_without_counterpart_are_all_listed(engine: Engine) -> None:
    plan = engine.load(ROOT / "graphs" / "multi_condition.yaml")
    with pytest.raises(ConversionError) as err:
        export_graph(plan.resolved)
    text = str(err.value)
    for node in ("skeleton", "edges", "adapter", "edge_t2i"):
        assert f"node '{node}'" in text


def test_cli_export_of_a_nodegraph_graph_imports_back(tmp_path: Path) -> None:
    out = tmp_path / "txt2img_api.json"
    result = CliRunner().invoke(
        app, ["export", "comfyui", str(ROOT / "graphs" / "txt2img.yaml"), "--set", "seed=3", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    prompt = json.loads(out.read_text())
    sampler = next(n for n in prompt.values() if n["class_type"] == "KSampler")
    assert sampler["inputs"]["seed"] == 3 and sampler["inputs"]["sampler_name"] == "dpmpp_2m"
    graph = import_workflow(out)
    assert graph["params"]["seed"]["default"] == 3
    bad = CliRunner().invoke(app, ["export", "comfyui", str(ROOT / "graphs" / "multi_condition.yaml")])
    assert bad.exit_code == 2 and "node 'skeleton'" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize("name", UNIPC_BH2)
def test_inpaint_outpaint_and_upscale_round_trip(name: str, engine: Engine) -> None:
    file = FIXTURES / f"{name}.json"
    first = import_workflow(file)
    prompt = json.loads(json.dumps(export_graph(engine.load(first, file=file).resolved)))
    original = sorted(v["class_type"] for v in json.loads(file.read_text()).values())
    assert sorted(n["class_type"] for n in prompt.values()) == original  # LoadImage's mask folds back
    mappings = collect(providers=[])
    again = convert_workflow(
        read_workflow(prompt, {k: m.widgets for k, m in mappings.classes.items()}, "x"), mappings
    )
    assert again["nodes"] == first["nodes"]

    def values(graph: dict[str, Any]) -> dict[str, Any]:
        return {k: v["default"] for k, v in graph["params"].items()}

    assert values(again) == values(first)
