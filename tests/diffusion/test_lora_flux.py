"""Flux.1 LoRA (builtin:tinyflux): graphs/flux_lora.yaml == FluxPipeline.load_lora_weights, same seed.

The files (flux_lora_files.py) have random non-zero A and B on every transformer layer the BFL layout
names and on CLIP-L's attention; the Kohya and BFL/ComfyUI copies are written from the layout's
definition (fused qkv and linear1, alpha = rank/2) and are compared with the diffusers-layout file
loaded by the pipeline itself. The pipeline's LoRA tensors get their own memory (`own_storage`), as
ours do (flux_lora.owned): tensors viewing a memory-mapped file compute 1 ulp apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from flux_lora_files import TINYFLUX, to_original, write_diffusers_lora
from safetensors.torch import load_file
from test_flux import flux_pipe

from nodegraph import Engine, RunOptions

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
PROMPT = "a big red circle in the center, blue background"  # graphs/flux_lora.yaml's default
STEPS, SEED, GUIDANCE = 2, 3, 3.5

TWO_LORAS = """version: 1
nodes:
  model:    {type: diffusion.load_model, path: "builtin:tinyflux"}
  first:    {type: diffusion.load_lora, unet: "@model.unet", text_encoder: "@model.text_encoder",
             path: "FIRST", unet_weight: 0.7, text_encoder_weight: 0.7}
  second:   {type: diffusion.load_lora, unet: "@first.unet", text_encoder: "@first.text_encoder",
             path: "SECOND", unet_weight: -0.3, text_encoder_weight: -0.3}
  text:     {type: diffusion.encode_text, encoder: "@second.text_encoder", text: "PROMPT"}
  positive: {type: diffusion.flux_guidance, conditioning: "@text", guidance: 3.5}
  empty:    {type: diffusion.empty_latents, width: 64, height: 64, unet: "@model.unet"}
  latents:  {type: diffusion.sample, unet: "@second.unet", scheduler: "@model.scheduler",
             positive: "@positive", latents: "@empty", seed: 3, steps: 2, cfg: 1.0}
  image:    {type: diffusion.vae_decode, vae: "@model.vae", latents: "@latents"}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flux_loras")
    first = write_diffusers_lora(root / "flux_a.safetensors", seed=1)
    second = write_diffusers_lora(root / "flux_b.safetensors", seed=2, rank=2)
    return {"diffusers": first, "kohya": to_original(first, root / "flux_a_kohya.safetensors", "kohya"),
            "bfl": to_original(first, root / "flux_a_bfl.safetensors", "bfl"), "second": second,
            "second_bfl": to_original(second, root / "flux_b_bfl.safetensors", "bfl")}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(cache_mb=256)


def options(tmp_path: Path) -> RunOptions:
    return RunOptions(out_dir=tmp_path / "out", device="cpu", dtype="float32", show_progress=False)


def run_lora_graph(engine: Engine, tmp_path: Path, lora: Path, weight: float) -> torch.Tensor:
    params = {"lora": str(lora), "lora_weight": weight, "steps": STEPS, "seed": SEED, "guidance": GUIDANCE}
    result = engine.run(GRAPHS / "flux_lora.yaml", params, options=options(tmp_path))
    return result.outputs["image"]["out"].pixels


def pipe_pixels(loras: dict[str, Path] | None = None, weights: list[float] | None = None) -> torch.Tensor:
    """FluxPipeline's pixels, with each (adapter name -> diffusers-layout file) loaded by its own
    `load_lora_weights` and weighted by `set_adapters`."""
    from nodegraph_diffusion.loading import own_storage

    pipe = flux_pipe("tinyflux")
    for name, file in (loras or {}).items():
        pipe.load_lora_weights(str(file), adapter_name=name)
    if loras:
        pipe.set_adapters(list(loras), weights)
        own_storage(pipe.transformer)
        own_storage(pipe.text_encoder)
    return pipe(PROMPT, height=64, width=64, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                generator=torch.Generator().manual_seed(SEED), output_type="pt").images


@pytest.fixture(scope="module")
def reference(files: dict[str, Path]) -> torch.Tensor:
    return pipe_pixels({"a": files["diffusers"]}, [0.8])


@pytest.mark.parametrize("layout", ["diffusers", "kohya", "bfl"])
def test_flux_lora_graph_equals_load_lora_weights(engine: Engine, tmp_path: Path, files: dict[str, Path],
                                                  reference: torch.Tensor, layout: str) -> None:
    keys = set(load_file(files[layout]))
    marker = {"diffusers": "transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight",
              "kohya": "lora_unet_single_blocks_0_linear1.lora_down.weight",
              "bfl": "diffusion_model.single_blocks.0.linear1.lora_A.weight"}[layout]
    assert marker in keys
    ours = run_lora_graph(engine, tmp_path, files[layout], 0.8)
    assert (ours - reference).abs().max().item() == 0.0
    assert (reference - pipe_pixels()).abs().max().item() > 1e-2  # the LoRA acts


def test_two_loras_with_weights_equal_set_adapters(engine: Engine, tmp_path: Path,
                                                   files: dict[str, Path]) -> None:
    graph = tmp_path / "two.yaml"
    graph.write_text(TWO_LORAS.replace("FIRST", str(files["kohya"]))
                     .replace("SECOND", str(files["second_bfl"])).replace("PROMPT", PROMPT))
    ours = engine.run(graph, {}, options=options(tmp_path)).outputs["image"]["out"].pixels
    both = pipe_pixels({"a": files["diffusers"], "b": files["second"]}, [0.7, -0.3])
    assert (ours - both).abs().max().item() == 0.0
    assert (ours - pipe_pixels({"a": files["diffusers"]}, [0.7])).abs().max().item() > 1e-3  # b acts


def test_changing_the_weight_reads_neither_the_model_nor_the_file_again(
        engine: Engine, tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from nodegraph_diffusion import flux_lora

    reads: list[str] = []
    real = flux_lora.flux_lora_state_dict

    def counting(source: Any, transformer: Any) -> Any:
        reads.append("transformer" if transformer is not None else "text_encoder")
        return real(source, transformer)

    monkeypatch.setattr(flux_lora, "flux_lora_state_dict", counting)
    fresh = Engine(cache_mb=256)
    strong = run_lora_graph(fresh, tmp_path, files["bfl"], 0.8)
    weak = run_lora_graph(fresh, tmp_path, files["bfl"], 0.3)
    off = run_lora_graph(fresh, tmp_path, files["bfl"], 0.0)
    assert sorted(reads) == ["text_encoder", "transformer"]  # one read per model, for all three runs
    model = fresh.run(GRAPHS / "flux.yaml", {"steps": STEPS, "seed": SEED, "guidance": GUIDANCE},
                      options=options(tmp_path))
    fingerprint = model.outputs["model"]["unet"].source.fingerprint
    for part in ("unet", "text_encoder", "text_encoder_2"):
        assert fresh.resources.stats.loads[f"{fingerprint}:{part}"] == 1, part  # exact key, not a prefix
    assert (strong - weak).abs().max().item() > 1e-3
    assert (off - model.outputs["image"]["out"].pixels).abs().max().item() == 0.0  # weight 0 = no LoRA


@pytest.mark.parametrize("sparse", [True, False])
def test_linear1_split_equals_diffusers_at_flux1_widths(sparse: bool) -> None:
    """At FLUX.1's widths ([3072]*3 + [12288], what diffusers' converter hard-codes) our split of a fused
    single-block linear1 equals diffusers' own, block-diagonal (trained apart) or not, alpha included."""
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers
    from nodegraph_diffusion.flux_lora import split_linear1

    dims, rank = [3072, 3072, 3072, 12288], 8
    generator = torch.Generator().manual_seed(0)
    down = torch.randn(rank, 3072, generator=generator)
    if sparse:
        up = torch.block_diag(*[torch.randn(d, rank // 4, generator=generator) for d in dims])
    else:
        up = torch.randn(sum(dims), rank, generator=generator)
    alpha = torch.tensor(3.0)
    name = "lora_unet_single_blocks_0_linear1"
    theirs = _convert_kohya_flux_lora_to_diffusers(
        {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up, f"{name}.alpha": alpha})
    ours = split_linear1(down, up, alpha, dims, 0)
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    mlp_rank = ours["transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight"].shape[0]
    assert mlp_rank == (2 if sparse else 8)


def test_diffusers_alone_drops_what_the_reader_restores(files: dict[str, Path], tmp_path: Path) -> None:
    """Why flux_lora.py exists: FluxPipeline.load_lora_weights loads nothing of a BFL `lora_A` file and,
    of a Kohya file (linear1 left out: diffusers' split asserts FLUX.1's widths), not its top-level
    layers (img_in, txt_in, time_in, vector_in, guidance_in, final_layer)."""
    from diffusers import FluxPipeline
    from nodegraph_diffusion.flux_lora import flux_lora_state_dict

    assert not any(k.startswith("transformer.") for k in
                   FluxPipeline.lora_state_dict(str(files["bfl"]), return_alphas=True)[0])
    kohya = to_original(files["diffusers"], tmp_path / "no_linear1.safetensors", "kohya",
                        skip=("single_blocks.0.linear1",))
    theirs = FluxPipeline.lora_state_dict(str(kohya))
    assert "x_embedder.lora_A.weight" in theirs  # not under transformer.: load_lora_adapter skips it
    from diffusers import FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(TINYFLUX, subfolder="transformer",
                                                         local_files_only=True)
    ours, _, _ = flux_lora_state_dict(str(files["bfl"]), transformer)
    wanted = {k for k in load_file(files["diffusers"]) if k.startswith("transformer.")}
    assert {k for k in ours if k.startswith("transformer.")} == wanted
