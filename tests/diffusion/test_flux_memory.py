"""Flux (and SD3) under a VRAM budget: text encoders leave before the transformer comes, and a
transformer past the budget is streamed in groups of blocks through diffusers' group offloading,
with the pixels of the unbudgeted run and of `FluxPipeline`, to the last bit.

The CPU plays the accelerator and a stand-in host ("ram") plays CPU RAM (as in
tests/engine/scheduler/test_order_and_budget_runs.py), so budgets on "cpu" are real bookkeeping with
real modules. diffusers' hooks then move groups between torch's "cpu" and "cpu": every hook runs (the
test counts the group onloads) while the arithmetic stays the model's own. The Flux here has 3
double-stream and 4 single-stream blocks (the built-in tiny one has one of each), so a group can hold
two blocks of one list and not three.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from nodegraph import Engine, RunOptions
from nodegraph.runtime.residency import ResidencyManager, module_bytes, move_module

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"
PROMPT = "a big red circle in the center, blue background"
STEPS = 3


@pytest.fixture(scope="session")
def deep_flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Flux.1-dev with 3 + 4 blocks, in diffusers layout."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from nodegraph_diffusion.tiny import _init_
    from nodegraph_diffusion.tiny_flux import TRANSFORMER_CONFIG, build_tiny_flux_components
    from nodegraph_diffusion.tiny_tokenizer import write_tokenizer

    parts = build_tiny_flux_components(seed=4)
    transformer = FluxTransformer2DModel(**{**TRANSFORMER_CONFIG, "num_layers": 3, "num_single_layers": 4},
                                         guidance_embeds=True)
    _init_(transformer, torch.Generator("cpu").manual_seed(5))
    parts["transformer"] = transformer.eval()
    folder = tmp_path_factory.mktemp("deep_flux") / "flux"
    FluxPipeline(**parts).save_pretrained(folder, safe_serialization=True)
    write_tokenizer(folder / "tokenizer")
    return folder


@pytest.fixture(scope="session")
def sizes(deep_flux: Path) -> dict[str, Any]:
    """Component bytes, and the transformer's block layout (group_offload.block_layout)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from nodegraph_diffusion.group_offload import block_layout
    from transformers import CLIPTextModel, T5EncoderModel

    classes = {"transformer": FluxTransformer2DModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
               "text_encoder_2": T5EncoderModel}
    models = {n: c.from_pretrained(deep_flux, subfolder=n, local_files_only=True) for n, c in classes.items()}
    found: dict[str, Any] = {name: module_bytes(model) for name, model in models.items()}
    found["layout"] = block_layout(models["transformer"])
    return found


def standin_engine(vram: int | None) -> Engine:
    """CPU plays the accelerator under `vram` bytes; "ram" plays the host (moves there are bookkeeping)."""

    def mover(value: Any, device: str, dtype: Any) -> Any:
        return value if device == "ram" else move_module(value, device, dtype)

    return Engine(resources=ResidencyManager(vram_budget={"cpu": vram} if vram else None, host="ram",
                                             mover=mover))


def run(engine: Engine, out: Path, graph: str = "flux.yaml", **params: Any) -> Any:
    options = RunOptions(out_dir=out, device="cpu", dtype="float32", show_progress=False)
    return engine.run(GRAPHS / graph, {"steps": STEPS, "seed": 3, **params}, options)


def events(result: Any) -> list[tuple[str, str]]:
    return [(e["event"], e["model"]) for e in result.resources["events"]]


@pytest.fixture(scope="session")
def reference(deep_flux: Path) -> tuple[torch.Tensor, np.ndarray]:
    """FluxPipeline's latents (unpacked) and image for the graph's settings."""
    from diffusers import FluxPipeline
    from nodegraph_diffusion.loading import own_storage

    pipe = FluxPipeline.from_pretrained(deep_flux, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        own_storage(part)
    kwargs: dict[str, Any] = {"height": 64, "width": 64, "num_inference_steps": STEPS, "guidance_scale": 3.5}
    packed = pipe(PROMPT, **kwargs, output_type="latent", generator=torch.Generator().manual_seed(3)).images
    image = pipe(PROMPT, **kwargs, generator=torch.Generator().manual_seed(3)).images[0]
    return pipe._unpack_latents(packed, 64, 64, pipe.vae_scale_factor), np.asarray(image)


@pytest.fixture(scope="session")
def unbudgeted(deep_flux: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return run(standin_engine(None), tmp_path_factory.mktemp("free"), model=str(deep_flux))


def assert_same_pixels(result: Any, out: Path, free: Any, reference: tuple[torch.Tensor, np.ndarray]) -> None:
    latents, image = reference
    ours = result.outputs["latents"]["out"].samples
    assert (ours - free.outputs["latents"]["out"].samples).abs().max().item() == 0.0
    assert (ours - latents).abs().max().item() == 0.0
    assert torch.equal(result.outputs["image"]["out"].pixels, free.outputs["image"]["out"].pixels)
    with PILImage.open(out / "flux.png") as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), image)


def test_text_encoders_leave_before_the_transformer_is_placed(
        tmp_path: Path, deep_flux: Path, sizes: dict[str, Any], unbudgeted: Any,
        reference: tuple[torch.Tensor, np.ndarray]) -> None:
    encoders = sizes["text_encoder"] + sizes["text_encoder_2"]
    budget = sizes["transformer"] + min(sizes["text_encoder"], sizes["text_encoder_2"]) - 1
    assert sizes["transformer"] + encoders > budget >= max(encoders, sizes["vae"])  # what the test is about
    result = run(standin_engine(budget), tmp_path, model=str(deep_flux))
    log = events(result)
    placed = log.index(("placed", "transformer"))
    for encoder in ("text_encoder", "text_encoder_2"):
        assert log.index(("placed", encoder)) < log.index(("offloaded", encoder)) < placed
    assert ("streamed", "transformer") not in log  # it fits alone: placed whole
    assert result.resources["peak_bytes"]["cpu"] <= budget
    row = result.resources["events"][placed]
    assert (row["bytes"], row["device"]) == (sizes["transformer"], "cpu")
    assert_same_pixels(result, tmp_path, unbudgeted, reference)


def test_a_transformer_past_the_budget_is_streamed_in_groups_with_the_same_pixels(
        tmp_path: Path, deep_flux: Path, sizes: dict[str, Any], unbudgeted: Any,
        reference: tuple[torch.Tensor, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.hooks.group_offloading import ModuleGroup

    layout = sizes["layout"]
    assert [len(blocks) for blocks in layout.lists] == [3, 4]
    budget = layout.rest + layout.largest_group(2)  # two blocks fit beside the rest, three do not
    assert layout.rest + layout.largest_group(3) > budget and sizes["transformer"] > budget
    onloads: list[int] = []
    original = ModuleGroup.onload_

    def counted(self: Any) -> None:
        onloads.append(1)
        original(self)

    monkeypatch.setattr(ModuleGroup, "onload_", counted)
    result = run(standin_engine(budget), tmp_path, model=str(deep_flux))
    log = events(result)
    streamed = log.index(("streamed", "transformer"))
    assert log.index(("offloaded", "text_encoder_2")) < streamed
    row = result.resources["events"][streamed]
    assert row["bytes"] == budget and row["detail"].startswith(
        f"in groups of 2 blocks ({layout.largest_group(2) / 1e6:.1f} MB per group")
    assert result.resources["streams"] == 1
    (note,) = [n for n in result.notes if "streamed" in n]
    assert note.startswith(f"transformer ({sizes['transformer'] / 1e6:.1f} MB) does not fit")
    assert "streamed in groups of 2 blocks" in note
    # per transformer call: the rest, then groups [0-1] [2] of the double blocks, [0-1] [2-3] of the single
    assert len(onloads) == STEPS * (1 + 2 + 2)
    assert result.resources["peak_bytes"]["cpu"] <= budget
    assert_same_pixels(result, tmp_path, unbudgeted, reference)


def test_a_streamed_transformer_placed_whole_later_loses_the_hooks(deep_flux: Path,
                                                                  sizes: dict[str, Any]) -> None:
    from diffusers import FluxTransformer2DModel
    from nodegraph_diffusion.group_offload import GroupOffload, is_streamed

    model = FluxTransformer2DModel.from_pretrained(deep_flux, subfolder="transformer", local_files_only=True)
    inputs = {"hidden_states": torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(0)),
              "encoder_hidden_states": torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1)),
              "pooled_projections": torch.randn(1, 32, generator=torch.Generator().manual_seed(2)),
              "timestep": torch.tensor([0.5]), "guidance": torch.tensor([3.5]),
              "img_ids": torch.zeros(16, 3), "txt_ids": torch.zeros(8, 3), "return_dict": False}
    with torch.no_grad():
        whole = model(**inputs)[0]
    manager = ResidencyManager(vram_budget={"cpu": sizes["transformer"] // 2}, host="ram",
                               mover=lambda v, d, t: v if d == "ram" else move_module(v, d, t))

    def use() -> Any:
        return manager.use("t", lambda: model, device="cpu", label="transformer", streaming=GroupOffload())

    with use() as streamed, torch.no_grad():
        assert is_streamed(streamed) and manager.streamed("t") is not None
        assert torch.equal(streamed(**inputs)[0], whole)
    manager.vram_budget = None
    with use() as placed, torch.no_grad():
        assert not is_streamed(placed) and manager.streamed("t") is None
        hooked = [m for m in placed.modules() if getattr(m, "_diffusers_hook", None)
                  and m._diffusers_hook.hooks]
        assert hooked == []
        assert torch.equal(placed(**inputs)[0], whole)
    assert [e.event for e in manager.stats.events][-2:] == ["unstreamed", "placed"]


def test_sd3_streamed_equals_its_unbudgeted_run(tmp_path: Path) -> None:
    """SD3's transformer streams the same way (its unbudgeted run equals StableDiffusion3Pipeline:
    test_sd3.py), so equality with the unbudgeted run is equality with the pipeline."""
    from diffusers import SD3Transformer2DModel
    from nodegraph_diffusion.paths import BUILTIN_DIR

    folder = BUILTIN_DIR / "tinysd3"
    whole = module_bytes(SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer",
                                                               local_files_only=True))
    free = run(standin_engine(None), tmp_path / "free", "sd35.yaml", steps=2)
    tight = run(standin_engine(whole - 1), tmp_path / "tight", "sd35.yaml", steps=2)
    assert ("streamed", "transformer") in events(tight)
    assert torch.equal(tight.outputs["image"]["out"].pixels, free.outputs["image"]["out"].pixels)


def test_the_cli_budget_reaches_the_manager_and_the_report_says_streamed(
        tmp_path: Path, deep_flux: Path, sizes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """`nodegraph run --vram-budget N`: N becomes the manager's budget (here on the CPU stand-in, the CLI's
    own Engine swapped for one whose manager plays a device on the CPU), the note and the residency
    line say the transformer was streamed, report.json lists the events in order."""
    import json

    from typer.testing import CliRunner

    from nodegraph.cli import app as cli_app

    budgets: list[int | None] = []

    def engine(registry: Any, *, vram_budget: int | None = None, **kwargs: Any) -> Engine:
        budgets.append(vram_budget)
        made = standin_engine(vram_budget)
        return Engine(registry, cache_mb=0, resources=made.resources)

    monkeypatch.setattr(cli_app, "Engine", engine)
    layout = sizes["layout"]
    budget = layout.rest + layout.largest_group(2)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli_app.app, [
        "run", str(GRAPHS / "flux.yaml"), "--out", str(out), "--set", f"model={deep_flux}",
        "--set", "steps=2", "--vram-budget", str(budget), "--report", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert budgets == [budget]
    assert "note: transformer" in result.output and "streamed in groups of 2 blocks" in result.output
    assert "1 streamed in groups" in result.output
    rows = json.loads((out / "report.json").read_text())["resources"]["events"]
    kinds = [(r["event"], r["model"]) for r in rows]
    assert kinds.index(("offloaded", "text_encoder_2")) < kinds.index(("streamed", "transformer"))


def test_a_lora_on_a_streamed_transformer_equals_the_unbudgeted_run(tmp_path: Path) -> None:
    """The LoRA is injected after the hooks are made (diffusers' loader re-applies them); its pixels
    equal the unbudgeted run's (which equals FluxPipeline.load_lora_weights: test_lora_flux.py)."""
    from diffusers import FluxTransformer2DModel
    from nodegraph_diffusion.paths import BUILTIN_DIR

    model = FluxTransformer2DModel.from_pretrained(BUILTIN_DIR / "tinyflux", subfolder="transformer",
                                                   local_files_only=True)
    whole = module_bytes(model)
    free = run(standin_engine(None), tmp_path / "free", "flux_lora.yaml", steps=2)
    tight = run(standin_engine(whole - 1), tmp_path / "tight", "flux_lora.yaml", steps=2)
    assert ("streamed", "transformer") in events(tight)
    plain = run(standin_engine(None), tmp_path / "plain", steps=2)
    assert (free.outputs["image"]["out"].pixels - plain.outputs["image"]["out"].pixels).abs().max() > 1e-2
    assert torch.equal(tight.outputs["image"]["out"].pixels, free.outputs["image"]["out"].pixels)
