"""SD3 LoRA (builtin:tinysd3): the graph == StableDiffusion3Pipeline.load_lora_weights, same seed; and
LoRAs of other families refused by `nodegraph validate` (exit 2), naming the node and the field.

The SD3 file has random non-zero A and B on the transformer's attention and both CLIP encoders
(diffusers layout, the only one diffusers' SD3 loader reads). The pipeline's LoRA tensors get their
own memory (`own_storage`), as ours do (flux_lora.owned).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flux_lora_files import to_original
from flux_lora_files import write_diffusers_lora as write_flux_lora
from safetensors.torch import save_file
from test_sd3 import TINYSD3, sd3_pipe

from nodegraph import Engine, RunOptions

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
PROMPT = "a big red circle in the center, blue background"
TRANSFORMER_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]

GRAPH = """version: 1
params:
  lora:   {type: str, default: "LORA"}
  weight: {type: float, default: 1.0}
nodes:
  model:    {type: diffusion.load_model, path: "MODEL"}
  styled:   {type: diffusion.load_lora, unet: "@model.unet", text_encoder: "@model.text_encoder", path: $lora,
             unet_weight: $weight, text_encoder_weight: $weight}
  positive: {type: diffusion.encode_text, encoder: "@styled.text_encoder", text: "PROMPT"}
  negative: {type: diffusion.encode_text, encoder: "@styled.text_encoder", text: ""}
  empty:    {type: diffusion.empty_latents, width: 64, height: 64, unet: "@model.unet"}
  latents:  {type: diffusion.sample, unet: "@styled.unet", scheduler: "@model.scheduler", positive: "@positive",
             negative: "@negative", latents: "@empty", seed: 5, steps: 2, cfg: 4.0}
  image:    {type: diffusion.vae_decode, vae: "@model.vae", latents: "@latents"}
"""


def write_sd3_lora(out: Path, seed: int, rank: int = 4, scale: float = 0.6) -> Path:
    """A LoRA on tinysd3's transformer attention and both CLIP encoders, random A and B, diffusers layout."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModelWithProjection

    transformer = SD3Transformer2DModel.from_pretrained(TINYSD3, subfolder="transformer", local_files_only=True)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TRANSFORMER_TARGETS))
    encoders = [CLIPTextModelWithProjection.from_pretrained(TINYSD3, subfolder=f, local_files_only=True)
                for f in ("text_encoder", "text_encoder_2")]
    for encoder in encoders:
        encoder.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TE_TARGETS))
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for model in (transformer, *encoders):
            for name, param in sorted(model.named_parameters()):
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusion3Pipeline.save_lora_weights(
        out.parent, transformer_lora_layers=get_peft_model_state_dict(transformer),
        text_encoder_lora_layers=get_peft_model_state_dict(encoders[0]),
        text_encoder_2_lora_layers=get_peft_model_state_dict(encoders[1]),
        weight_name=out.name, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from nodegraph_diffusion.lora import save_tiny_style_lora
    from nodegraph_diffusion.paths import BUILTIN_DIR

    root = tmp_path_factory.mktemp("sd3_loras")
    flux = write_flux_lora(root / "flux.safetensors", seed=4, rank=2, text_encoder=False)
    return {"sd3": write_sd3_lora(root / "sd3.safetensors", seed=3), "flux_diffusers": flux,
            "flux": to_original(flux, root / "flux_bfl.safetensors", "bfl"),
            "sd1": save_tiny_style_lora(BUILTIN_DIR / "tinyworld", root / "sd1-lora")}


def graph_file(tmp_path: Path, model: str, lora: Path | None = None) -> Path:
    file = tmp_path / f"lora_on_{model.split(':')[-1]}.yaml"
    file.write_text(GRAPH.replace("MODEL", model).replace("PROMPT", PROMPT).replace("LORA", str(lora or "")))
    return file


def test_sd3_lora_graph_equals_load_lora_weights(tmp_path: Path, files: dict[str, Path]) -> None:
    from nodegraph_diffusion.loading import own_storage

    options = RunOptions(out_dir=tmp_path / "out", device="cpu", dtype="float32", show_progress=False)
    ours = Engine().run(graph_file(tmp_path, "builtin:tinysd3"), {"lora": str(files["sd3"]), "weight": 0.9},
                        options).outputs["image"]["out"].pixels
    pipe = sd3_pipe()

    def pixels() -> torch.Tensor:
        return pipe(PROMPT, negative_prompt="", height=64, width=64, num_inference_steps=2, guidance_scale=4.0,
                    output_type="pt", generator=torch.Generator().manual_seed(5)).images

    base = pixels()
    pipe.load_lora_weights(str(files["sd3"]), adapter_name="s")
    pipe.set_adapters(["s"], [0.9])
    for part in (pipe.transformer, pipe.text_encoder, pipe.text_encoder_2):
        own_storage(part)
        assert len(part.peft_config) == 1
    reference = pixels()
    assert (ours - reference).abs().max().item() == 0.0
    assert (reference - base).abs().max().item() > 1e-3  # the LoRA acts (tinysd3 pictures are all ~0.5)


def test_a_kohya_sd3_lora_is_refused_not_ignored(ctx: object, tmp_path: Path, files: dict[str, Path]) -> None:
    """diffusers' SD3 loader converts no Kohya names and would load nothing, silently."""
    from nodegraph_diffusion.loading import use_unet
    from nodegraph_diffusion.model_nodes import load_lora, load_model
    from nodegraph_diffusion.paths import LoraRef, ModelRef

    from nodegraph.api import InputError

    kohya = tmp_path / "sd3_kohya.safetensors"
    save_file({"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": torch.randn(4, 32),
               "lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight": torch.randn(96, 4),
               "lora_unet_joint_blocks_0_x_block_attn_qkv.alpha": torch.tensor(4.0)}, str(kohya))
    model = load_model(ctx, ModelRef("builtin:tinysd3"))  # type: ignore[arg-type]
    patched = load_lora(ctx, model.unet, model.text_encoder, LoraRef(str(kohya)))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="only in diffusers/peft layout.*lora_unet_joint_blocks_0") as info, \
            use_unet(ctx, patched.unet):  # type: ignore[arg-type]
        pass
    assert info.value.field == "path"


@pytest.mark.parametrize(("model", "lora", "says"), [
    ("builtin:tinyflux", "sd1", "it has weights for unet, which Flux.1 models do not have"),
    ("builtin:tinysd3", "flux", "single_blocks"),
    ("builtin:tinysd3", "flux_diffusers", "single_transformer_blocks"),
    ("builtin:tinyworld", "flux", "transformer, which SD1.x models do not have (it looks made for Flux.1)"),
])
def test_another_familys_lora_fails_validation_naming_node_and_field(
        tmp_path: Path, files: dict[str, Path], model: str, lora: str, says: str) -> None:
    from nodegraph.document.load import load_plan
    from nodegraph.errors import GraphError
    from nodegraph.nodes.registry import build_registry

    file = files[lora]
    with pytest.raises(GraphError) as info:
        load_plan(graph_file(tmp_path, model), build_registry(), {"lora": str(file)})
    (problem,) = info.value.problems
    assert (problem.node, problem.field) == ("styled", "path"), str(problem)
    flat = " ".join(str(problem).split())
    article = "a" if "flux" in model else "an"  # 'a Flux.1 UNet', 'an SD3 UNet'
    assert says in flat and f"'unet' is {article} " in flat and "node 'model'" in flat, flat


@pytest.mark.parametrize(("model", "lora"), [("builtin:tinyflux", "sd1"), ("builtin:tinysd3", "flux")])
def test_cli_validate_exits_2_on_another_familys_lora(tmp_path: Path, files: dict[str, Path], model: str,
                                                      lora: str) -> None:
    from typer.testing import CliRunner

    from nodegraph.cli.app import app

    graph = graph_file(tmp_path, model, files[lora])
    result = CliRunner().invoke(app, ["validate", str(graph)])
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert graph.name in flat and "styled" in flat and "path" in flat, flat
    assert "this LoRA is not for" in flat and "Traceback" not in flat
    ran = CliRunner().invoke(app, ["run", str(graph), "--no-cache", "-q", "--out", str(tmp_path / "out")])
    assert ran.exit_code == 2 and "Traceback" not in ran.output and not (tmp_path / "out").exists()
