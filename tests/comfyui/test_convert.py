"""Converting ComfyUI workflows: every fixture imports or fails naming every problem at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from nodegraph_comfyui import ClassMapping, ConversionError, Converter, import_workflow
from nodegraph_comfyui.importer import collect, convert_workflow, read
from nodegraph_comfyui.workflow import WfNode

from nodegraph import Engine

FIXTURES = Path(__file__).parent.parent / "fixtures" / "comfyui"
IMPORTS = [
    "txt2img_default",
    "img2img",
    "lora_single",
    "lora_multiple",
    "controlnet_scribble",
    "controlnet_multi_pose_scribble",
    "controlnet_pose_2pass_hires",
    "hiresfix_latent_upscale",
    "edge_subgraph_node_ids_dangling_node",
    "sdxl_base_refiner_ksampler_advanced",
    "ui_img2img",
    "ui_hiresfix_latent_upscale",
    "ui_controlnet_multi_pose_scribble",
    "ui_default_template_modern",
    "edge_string_node_ids_inpaint",
    "hiresfix_esrgan_pixel_upscale",
    "inpaint_vae_encode_for_inpaint",
    "outpaint_pad_for_outpaint",
    "area_composition",
    "sdxl_base_refiner_test_graph",
]
# file -> {class: node ids} the error must name, all of them and nothing else
FAILS: dict[str, dict[str, list[str]]] = {
    "controlnet_advanced_sd35_canny": {"EmptySD3LatentImage": []},
}


def test_every_fixture_is_covered() -> None:
    names = {p.stem for p in FIXTURES.glob("*.json")}
    assert names == set(IMPORTS) | set(FAILS)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


@pytest.mark.parametrize("name", IMPORTS)
def test_imports_and_validates(name: str, engine: Engine) -> None:
    graph = import_workflow(FIXTURES / f"{name}.json")
    plan = engine.load(graph, file=FIXTURES / f"{name}.json")
    assert plan.nodes and all(n.replace("_", "").isalnum() for n in graph["nodes"])  # readable names
    assert {"seed", "steps", "cfg", "checkpoint", "prompt", "negative"} <= set(graph["params"])


@pytest.mark.parametrize("name", sorted(FAILS))
def test_unsupported_classes_are_all_named(name: str) -> None:
    flow = read(FIXTURES / f"{name}.json")
    with pytest.raises(ConversionError) as err:
        import_workflow(FIXTURES / f"{name}.json")
    problems = err.value.problems
    for class_type, some_ids in FAILS[name].items():
        ids = sorted(n.id for n in flow.nodes.values() if n.class_type == class_type)
        line = next(p for p in problems if f"'{class_type}'" in p)
        assert all(f"'{i}'" in line for i in ids) and set(some_ids) <= set(ids)
        assert str(FIXTURES / f"{name}.json") in line
    assert len(problems) == len(FAILS[name])  # one line per class, nothing else


@pytest.mark.parametrize("name", ["img2img", "hiresfix_latent_upscale", "controlnet_multi_pose_scribble"])
def test_ui_and_api_files_import_to_the_same_graph(name: str) -> None:
    api = import_workflow(FIXTURES / f"{name}.json")
    ui = import_workflow(FIXTURES / f"ui_{name}.json")
    for graph in (api, ui):
        graph.pop("description")
        graph.pop("metadata")
    assert api == ui


def test_txt2img_reads_as_a_person_would_write_it() -> None:
    graph = import_workflow(FIXTURES / "txt2img_default.json")
    assert graph["nodes"] == {
        "checkpoint": {"type": "diffusion.load_model", "path": "$checkpoint"},
        "positive": {
            "type": "diffusion.encode_text",
            "encoder": "@checkpoint.text_encoder",
            "text": "$prompt",
        },
        "negative": {
            "type": "diffusion.encode_text",
            "encoder": "@checkpoint.text_encoder",
            "text": "$negative",
        },
        "empty": {
            "type": "diffusion.empty_latents",
            "width": "$width",
            "height": "$height",
            "batch": "$batch",
        },
        "scheduler": {
            "type": "diffusion.k_sampler",
            "model_scheduler": "@checkpoint.scheduler",
            "sampler": "$sampler",
            "scheduler": "$scheduler",
        },
        "latents": {
            "type": "diffusion.sample",
            "unet": "@checkpoint.unet",
            "scheduler": "@scheduler",
            "positive": "@positive",
            "negative": "@negative",
            "latents": "@empty",
            "seed": "$seed",
            "steps": "$steps",
            "cfg": "$cfg",
        },
        "image": {"type": "diffusion.vae_decode", "vae": "@checkpoint.vae", "latents": "@latents"},
        "save": {"type": "core.save_image", "image": "@image", "path": "ComfyUI_save.png"},
    }
    defaults = {k: v["default"] for k, v in graph["params"].items()}
    assert defaults == {
        "checkpoint": "v1-5-pruned-emaonly.safetensors",
        "prompt": "masterpiece best quality girl",
        "negative": "bad hands",
        "width": 512,
        "height": 512,
        "batch": 1,
        "sampler": "euler",
        "scheduler": "normal",
        "seed": 8566257,
        "steps": 20,
        "cfg": 8.0,
    }


def test_set_works_on_an_imported_graph(engine: Engine) -> None:
    graph = import_workflow(FIXTURES / "lora_multiple.json")
    plan = engine.load(
        graph,
        {"seed": "3", "lora_strength_2": "0.5", "prompt": "a cat"},
        file=FIXTURES / "lora_multiple.json",
    )
    assert plan.nodes["latents"].literals["seed"] == 3
    assert plan.nodes["lora_2"].literals["unet_weight"] == 0.5
    assert plan.nodes["positive"].literals["text"] == "a cat"


def test_clip_set_last_layer_becomes_clip_skip_and_controls_reach_the_sampler() -> None:
    graph = import_workflow(FIXTURES / "controlnet_pose_2pass_hires.json")
    encoders = [n for n in graph["nodes"].values() if n["type"] == "diffusion.encode_text"]
    assert encoders and all(n.get("clip_skip") == 1 for n in encoders)  # stop_at_clip_layer -2
    multi = import_workflow(FIXTURES / "controlnet_multi_pose_scribble.json")
    assert multi["nodes"]["latents"]["conditions"] == ["@control", "@control_2"]
    assert multi["nodes"]["image"]["vae"] == "@vae"  # the VAELoader's, not the checkpoint's


def test_dangling_nodes_are_dropped() -> None:
    graph = import_workflow(FIXTURES / "edge_subgraph_node_ids_dangling_node.json")
    assert [n for n in graph["nodes"] if n.startswith("checkpoint")] == ["checkpoint"]


def test_custom_class_names_its_package_and_every_problem_at_once(tmp_path: Path) -> None:
    data = json.loads((FIXTURES / "txt2img_default.json").read_text())
    data["90"] = {"class_type": "UltimateSDUpscale", "inputs": {"image": ["8", 0]}}
    data["91"] = {"class_type": "MyOwnThing", "inputs": {}}
    data["92"] = {"class_type": "SaveImage", "inputs": {"images": ["90", 0], "filename_prefix": "x"}}
    data["3"]["inputs"]["sampler_name"] = "res_multistep"
    file = tmp_path / "w.json"
    file.write_text(json.dumps(data))
    with pytest.raises(ConversionError) as err:
        import_workflow(file)
    text = str(err.value)
    assert "'90'" in text and "ComfyUI_UltimateSDUpscale" in text
    assert "'91'" in text and "MyOwnThing" in text
    assert "node '3' (KSampler), input 'sampler_name'" in text and "res_multistep" in text
    assert len(err.value.problems) == 3


def _sharpen(cv: Converter, node: WfNode) -> list[Any]:
    image = cv.input(node, "image")
    return [
        "@"
        + cv.add(
            "sharpen",
            "core.resize",
            image=image,
            width=cv.literal(node, "size"),
            height=cv.literal(node, "size"),
        )
    ]


def test_a_pack_maps_its_own_comfyui_class(engine: Engine, tmp_path: Path) -> None:
    data = json.loads((FIXTURES / "ui_img2img.json").read_text())
    decode = next(n for n in data["nodes"] if n["type"] == "VAEDecode")
    save = next(n for n in data["nodes"] if n["type"] == "SaveImage")
    link = next(i for i in save["inputs"] if i["name"] == "images")["link"]
    data["nodes"].append(
        {
            "id": 77,
            "type": "MySharpen",
            "mode": 0,
            "widgets_values": [48],
            "inputs": [{"name": "image", "type": "IMAGE", "link": 700}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [link]}],
        }
    )
    row = next(r for r in data["links"] if r[0] == link)
    data["links"].append([700, decode["id"], 0, 77, 0, "IMAGE"])
    row[1], row[2] = 77, 0
    file = tmp_path / "ui.json"
    file.write_text(json.dumps(data))
    with pytest.raises(ConversionError, match="MySharpen"):
        import_workflow(file, collect(providers=[]))
    mine = ClassMapping("MySharpen", _sharpen, widgets=("size",), nodegraph="core.resize")
    broken = ("broken", lambda: 1 / 0)
    mappings = collect(providers=[("mine", lambda: [mine]), broken])
    assert any("broken" in note and "ZeroDivisionError" in note for note in mappings.notes)
    graph = convert_workflow(read(file, mappings), mappings)
    assert graph["nodes"]["sharpen"] == {"type": "core.resize", "image": "@image", "width": 48, "height": 48}
    assert graph["nodes"]["save"]["image"] == "@sharpen"
    engine.load(graph, file=file)


def test_written_yaml_loads_back_to_the_graph() -> None:
    from nodegraph.cli.import_cmd import to_yaml

    for name in IMPORTS:
        graph = import_workflow(FIXTURES / f"{name}.json")
        assert yaml.safe_load(to_yaml(graph)) == graph, name


def test_docs_table_lists_every_mapped_class_with_its_nodes() -> None:
    from nodegraph_comfyui.classes import core_mappings

    doc = (Path(__file__).parent.parent.parent / "docs" / "comfyui.md").read_text()
    for mapping in core_mappings():
        start = f"| `{mapping.class_type}` |"
        row = next((line for line in doc.splitlines() if line.startswith(start)), None)
        assert row is not None, mapping.class_type
        assert all(part in row for part in mapping.nodegraph.replace("+", " ").split() if "." in part)
