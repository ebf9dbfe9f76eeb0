"""Reading ComfyUI files: API, UI (litegraph) and PNG forms reduce to the same workflow.

The UI/API pairs in tests/fixtures/comfyui/ are the two chunks of one PNG each (SOURCES.md), so a
UI file read through the widget table must give exactly the inputs ComfyUI itself queued.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from nodegraph_comfyui.importer import collect, read
from nodegraph_comfyui.widgets import UI_ONLY_INPUTS
from nodegraph_comfyui.workflow import Link, detect, read_workflow

FIXTURES = Path(__file__).parent.parent / "fixtures" / "comfyui"
PAIRS = ["img2img", "hiresfix_latent_upscale", "controlnet_multi_pose_scribble"]


def _api_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in inputs.items() if k not in UI_ONLY_INPUTS}


@pytest.mark.parametrize("name", PAIRS)
def test_ui_file_reads_to_the_queued_api_prompt(name: str) -> None:
    api, ui = read(FIXTURES / f"{name}.json"), read(FIXTURES / f"ui_{name}.json")
    assert (api.format, ui.format) == ("api", "ui")
    assert sorted(api.nodes) == sorted(ui.nodes)
    for node_id, node in api.nodes.items():
        assert ui.nodes[node_id].class_type == node.class_type
        assert ui.nodes[node_id].inputs == _api_inputs(node.inputs), node_id


def test_control_after_generate_is_skipped_and_seed_kept() -> None:
    ui = read(FIXTURES / "ui_img2img.json")
    sampler = next(n for n in ui.nodes.values() if n.class_type == "KSampler")
    assert sampler.inputs["seed"] == 280823642470253 and sampler.inputs["steps"] == 20
    assert "randomize" not in sampler.inputs.values()


def test_notes_are_dropped_and_links_are_slots() -> None:
    ui = read(FIXTURES / "ui_default_template_modern.json")
    assert {n.class_type for n in ui.nodes.values()} == {
        "CheckpointLoaderSimple",
        "KSampler",
        "VAEDecode",
        "SaveImage",
        "CLIPTextEncode",
        "EmptyLatentImage",
    }
    decode = next(n for n in ui.nodes.values() if n.class_type == "VAEDecode")
    loader = next(n for n in ui.nodes.values() if n.class_type == "CheckpointLoaderSimple")
    assert decode.inputs["vae"] == Link(loader.id, 2)


def _ui_with_reroute_primitive_and_bypass() -> dict[str, Any]:
    """ui_img2img with a Reroute on the VAE link, the seed from a Primitive, and a bypassed node."""
    data = copy.deepcopy(json.loads((FIXTURES / "ui_img2img.json").read_text()))
    nodes = {n["id"]: n for n in data["nodes"]}
    decode = next(n for n in data["nodes"] if n["type"] == "VAEDecode")
    vae_in = next(i for i in decode["inputs"] if i["name"] == "vae")
    old = next(row for row in data["links"] if row[0] == vae_in["link"])
    data["nodes"].append(
        {
            "id": 900,
            "type": "Reroute",
            "mode": 0,
            "inputs": [{"name": "", "type": "*", "link": 901}],
            "outputs": [{"name": "", "type": "VAE", "links": [902]}],
        }
    )
    data["links"] += [[901, old[1], old[2], 900, 0, "VAE"], [902, 900, 0, decode["id"], old[4], "VAE"]]
    vae_in["link"] = 902
    sampler = next(n for n in data["nodes"] if n["type"] == "KSampler")
    sampler["inputs"].append({"name": "seed", "type": "INT", "link": 903, "widget": {"name": "seed"}})
    data["nodes"].append(
        {
            "id": 901,
            "type": "PrimitiveNode",
            "mode": 0,
            "widgets_values": [42, "fixed"],
            "outputs": [{"name": "INT", "type": "INT", "links": [903]}],
        }
    )
    data["links"].append([903, 901, 0, sampler["id"], 9, "INT"])
    data["nodes"].append(
        {
            "id": 902,
            "type": "FancyCustomNode",
            "mode": 4,
            "inputs": [{"name": "x", "type": "IMAGE", "link": None}],
            "outputs": [],
        }
    )
    assert len(nodes) + 3 == len(data["nodes"])
    return data


def test_reroute_primitive_and_bypass_resolve() -> None:
    mappings = collect(providers=[])
    flow = read_workflow(
        _ui_with_reroute_primitive_and_bypass(), {k: m.widgets for k, m in mappings.classes.items()}
    )
    plain = read(FIXTURES / "ui_img2img.json")
    decode = next(n for n in flow.nodes.values() if n.class_type == "VAEDecode")
    assert (
        decode.inputs["vae"]
        == next(n for n in plain.nodes.values() if n.class_type == "VAEDecode").inputs["vae"]
    )
    assert next(n for n in flow.nodes.values() if n.class_type == "KSampler").inputs["seed"] == 42
    assert sorted(flow.nodes) == sorted(plain.nodes)  # Reroute, Primitive and the bypassed node vanish


def test_subgraph_flattened_ids_and_titles() -> None:
    flow = read(FIXTURES / "edge_subgraph_node_ids_dangling_node.json")
    assert "20:6" in flow.nodes and flow.nodes["20:6"].class_type == "CLIPTextEncode"


def test_png_chunks_prompt_and_workflow(tmp_path: Path) -> None:
    from PIL import Image as PILImage
    from PIL.PngImagePlugin import PngInfo

    prompt = (FIXTURES / "img2img.json").read_text()
    workflow = (FIXTURES / "ui_img2img.json").read_text()
    both, ui_only = tmp_path / "both.png", tmp_path / "ui.png"
    info = PngInfo()
    info.add_text("prompt", prompt)
    info.add_text("workflow", workflow, zip=True)  # as zTXt: some tools re-save it compressed
    PILImage.new("RGB", (8, 8)).save(both, pnginfo=info)
    info = PngInfo()
    info.add_itxt("workflow", workflow, zip=True)
    PILImage.new("RGB", (8, 8)).save(ui_only, pnginfo=info)
    assert detect(both) and detect(ui_only)
    assert read(both).format == "api" and read(ui_only).format == "ui"
    assert read(both).nodes.keys() == read(FIXTURES / "img2img.json").nodes.keys()
    assert {k: n.inputs for k, n in read(ui_only).nodes.items()} == {
        k: n.inputs for k, n in read(FIXTURES / "ui_img2img.json").nodes.items()
    }


def test_detect_refuses_nodegraph_files(tmp_path: Path) -> None:
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"version": 1, "nodes": {"a": {"type": "core.text", "value": "x"}}}))
    assert not detect(graph)
    assert not detect(Path(__file__).parent.parent.parent / "graphs" / "txt2img.yaml")
    assert detect(FIXTURES / "txt2img_default.json") and detect(FIXTURES / "ui_img2img.json")
