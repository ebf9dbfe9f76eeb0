"""How the image and mask classes convert: the nodes and inputs each becomes, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from nodegraph_comfyui import ConversionError, import_workflow

FIXTURES = Path(__file__).parent.parent / "fixtures" / "comfyui"


def _with_scale(tmp_path: Path, **inputs: Any) -> Path:
    data = json.loads((FIXTURES / "img2img.json").read_text())
    decode = next(k for k, v in data.items() if v["class_type"] == "VAEDecode")
    save = next(k for k, v in data.items() if v["class_type"] == "SaveImage")
    data["90"] = {"class_type": "ImageScale", "inputs": {"image": [decode, 0], **inputs}}
    data[save]["inputs"]["images"] = ["90", 0]
    file = tmp_path / "w.json"
    file.write_text(json.dumps(data))
    return file


def test_image_scale_becomes_core_scale_and_0x0_passes_through(tmp_path: Path) -> None:
    graph = import_workflow(
        _with_scale(tmp_path, upscale_method="bicubic", width=96, height=0, crop="center")
    )
    assert graph["nodes"]["scaled"] == {
        "type": "core.scale",
        "image": "@image",
        "width": "$image_width",
        "height": "$image_height",
        "method": "bicubic",
        "crop": "center",
    }
    same = import_workflow(
        _with_scale(tmp_path, upscale_method="bilinear", width=0, height=0, crop="disabled")
    )
    assert "scaled" not in same["nodes"] and same["nodes"]["save"]["image"] == "@image"
    with pytest.raises(ConversionError) as err:
        import_workflow(_with_scale(tmp_path, upscale_method="bislerp", width=8, height=8, crop="disabled"))
    assert "node '90' (ImageScale), input 'upscale_method'" in str(err.value) and "bislerp" in str(err.value)


def test_the_string_id_inpaint_case_reads_as_written() -> None:
    graph = import_workflow(FIXTURES / "edge_string_node_ids_inpaint.json")
    nodes = graph["nodes"]
    assert nodes["mask"] == {"type": "core.load_mask", "path": "$mask_image", "channel": "red"}
    assert nodes["grown"] == {
        "type": "core.grow_mask",
        "mask": "@mask",
        "expand": "$grow",
        "tapered_corners": True,
    }
    assert nodes["encoded"]["mask"] == "@grown" and nodes["encoded"]["grow_mask_by"] == "$grow_mask_by"
    assert nodes["composite"] == {
        "type": "core.composite_masked",
        "destination": "@load_image",
        "source": "@image",
        "x": 0,
        "y": 0,
        "resize_source": False,
        "mask": "@grown",
    }
    origins = graph["metadata"]["comfyui"]["nodes"]
    assert origins["grown"] == ["grow_mask", "GrowMask"] and origins["composite"][0] == "composite"


def test_outpaint_pads_and_the_inpaint_mask_is_one_minus_alpha() -> None:
    out = import_workflow(FIXTURES / "outpaint_pad_for_outpaint.json")["nodes"]
    assert out["padded"]["type"] == "core.pad_for_outpaint" and out["padded"]["feathering"] == 40
    assert out["encoded"]["image"] == "@padded.image" and out["encoded"]["mask"] == "@padded.mask"
    inpaint = import_workflow(FIXTURES / "inpaint_vae_encode_for_inpaint.json")["nodes"]
    assert inpaint["alpha"] == {"type": "core.load_mask", "path": "$image", "channel": "alpha"}
    assert inpaint["encoded"]["mask"] == "@mask" and inpaint["mask"]["type"] == "core.invert_mask"
