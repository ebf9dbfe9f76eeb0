"""One CLIP folder for ranking and for the IP-Adapter: `control.load_ip_adapter(image_encoder=CLIP folder)`.

The folder is a whole CLIPModel whose vision tower and projection are the built-in adapter's own image
encoder (as laion's CLIP-ViT-H-14 is h94's SD1.5 encoder): the graph must give the same latents as
with the separate encoder folder, which test_ip_adapter_graph proves equal to the pipeline, while
`clip.score` reads the same folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from nodegraph import Engine
from nodegraph.errors import NodegraphError
from tests.run_helpers import cpu_options as options

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
FAST = {"steps": 3, "seed": 3, "ip_scale": 0.8}


def whole_clip(folder: Path, builtin: Path, perturb_vision: bool = False) -> Path:
    """A CLIPModel + CLIPProcessor folder whose vision half is tinyworld-ip-adapter's image encoder."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
        CLIPVisionModelWithProjection,
    )

    encoder = CLIPVisionModelWithProjection.from_pretrained(
        builtin / "tinyworld-ip-adapter" / "image_encoder", local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(builtin / "tinyworld" / "tokenizer")
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
            "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = encoder.config.to_dict()
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=encoder.config.projection_dim)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    missing, _ = model.load_state_dict(encoder.state_dict(), strict=False)
    assert not [k for k in missing if k.startswith(("vision_model.", "visual_projection."))]
    if perturb_vision:
        with torch.no_grad():
            model.visual_projection.weight.mul_(-1.0)
    size = encoder.config.image_size  # what the adapter's encoder folder (no processor file) is read with
    images = CLIPImageProcessor(size=size, crop_size=size)
    processor = CLIPProcessor(image_processor=images, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def with_encoder(tmp_path: Path, encoder: Path) -> Path:
    doc = yaml.safe_load((GRAPHS / "ip_adapter.yaml").read_text())
    doc["nodes"]["adapter"]["image_encoder"] = str(encoder)
    doc["nodes"]["clip"] = {"type": "clip.load", "path": str(encoder)}
    doc["nodes"]["scores"] = {"type": "clip.score", "clip": "@clip", "image": "@reference",
                              "texts": ["a red circle", "a blue square"]}
    graph = tmp_path / "ip_adapter_clip.yaml"
    graph.write_text(yaml.safe_dump(doc))
    reference = tmp_path / "inputs"
    reference.mkdir(exist_ok=True)
    (reference / "scene_64.png").write_bytes((GRAPHS / "inputs" / "scene_64.png").read_bytes())
    return graph


def test_a_clip_model_folder_is_the_adapters_encoder(tmp_path, builtin):
    engine = Engine()
    own = engine.run(GRAPHS / "ip_adapter.yaml", FAST, options(tmp_path / "own"))
    graph = with_encoder(tmp_path, whole_clip(tmp_path / "clip", builtin))
    shared = engine.run(graph, FAST, options(tmp_path / "shared"))
    ours = shared.outputs["latents"]["out"].samples
    assert (ours - own.outputs["latents"]["out"].samples).abs().max().item() == 0.0
    assert shared.outputs["scores"]["out"].values.shape == (1, 2)
    # and it is the encoder that acts: a CLIP folder with another projection gives another picture
    other = with_encoder(tmp_path, whole_clip(tmp_path / "other", builtin, perturb_vision=True))
    flipped = Engine().run(other, FAST, options(tmp_path / "flipped"))
    assert (flipped.outputs["latents"]["out"].samples - ours).abs().max().item() > 1e-3


def test_a_clip_folder_of_the_wrong_width_is_refused_naming_the_field(tmp_path, builtin):
    from nodegraph_multimodal.tiny_models import build_tiny_clip

    graph = with_encoder(tmp_path, build_tiny_clip(tmp_path / "narrow"))  # projection 16, adapter wants 32
    with pytest.raises(NodegraphError) as err:
        Engine().run(graph, FAST, options(tmp_path / "out"))
    text = str(err.value)
    assert "image_encoder" in text and "projection_dim 16" in text and "narrow" in text
    assert not (tmp_path / "out" / "ip_adapter.png").exists()
