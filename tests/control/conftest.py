"""Fixtures of the control tests: pose fixtures, the tiny models, run contexts, a loop runner.

- `poses`: tests/fixtures/poses (copies of public OpenPose files, see SOURCES.md there).
- `make_ctx(**options)`: a fresh NodeContext (own ResidencyManager, CPU fp32).
- `tiny`: the built-in tiny SD components loaded like our loader does (weights in own storage).
- `controlnet(name)` / `adapter()`: the built-in tiny control models, loaded for the pipelines.
- `run_units(units, ...)`: our sampling loop (nodegraph_diffusion.sampling.run_loop) with conditions.
- `control_image(seed)`: a random control image.
- `xl_base`, `xl_nets`: the tiny SDXL pipeline; SDXL ControlNets and a T2I-Adapter-XL made of its UNet.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "poses"
STEPS = 5
SEED = 3


@pytest.fixture(scope="session")
def poses() -> Path:
    return FIXTURES


@pytest.fixture
def make_ctx(tmp_path: Path) -> Callable[..., Any]:
    from nodegraph.runtime.context import RunContext, RunOptions
    from nodegraph.runtime.residency import ResidencyManager

    def make(graph_file: Path | None = None, **options: Any) -> Any:
        options.setdefault("device", "cpu")
        options.setdefault("dtype", "float32")
        options.setdefault("out_dir", tmp_path / "out")
        run = RunContext(
            options=RunOptions(**options),
            resources=ResidencyManager(),
            staging_dir=tmp_path / "staging",
            graph_file=graph_file,
        )
        return run.for_node("test", "test.node")

    return make


@pytest.fixture(scope="session")
def builtin() -> Path:
    from nodegraph_diffusion.paths import BUILTIN_DIR

    return BUILTIN_DIR


@pytest.fixture(scope="session")
def tiny(builtin: Path) -> dict[str, Any]:
    from diffusers import StableDiffusionPipeline
    from nodegraph_diffusion.loading import own_storage

    pipe = StableDiffusionPipeline.from_pretrained(builtin / "tinyworld", local_files_only=True)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        own_storage(part.eval())
    return dict(pipe.components)


@pytest.fixture(scope="session")
def embeds() -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) prompt embeddings for the tiny UNet (cross-attention dim 32)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)


@pytest.fixture
def load_control(builtin: Path) -> Callable[[str], Any]:
    from nodegraph_control.models import load_control_model
    from nodegraph_control.nodes import AdapterHandle, ControlNetHandle

    def load(name: str) -> Any:
        kind = "t2i_adapter" if name.endswith("adapter") else "controlnet"
        cls = AdapterHandle if kind == "t2i_adapter" else ControlNetHandle
        return load_control_model(cls(str(builtin / name), name, "diffusers"), None, kind)

    return load


@pytest.fixture
def handle(builtin: Path) -> Callable[[str], Any]:
    from nodegraph_control.models import AdapterHandle, ControlNetHandle
    from nodegraph_diffusion.paths import fingerprint_path

    def make(name: str) -> Any:
        cls = AdapterHandle if name.endswith("adapter") else ControlNetHandle
        return cls(str(builtin / name), fingerprint_path(builtin / name), "diffusers")

    return make


@pytest.fixture
def run_units(
    tiny: dict[str, Any], embeds: tuple[torch.Tensor, torch.Tensor], make_ctx: Callable[..., Any]
) -> Callable[..., torch.Tensor]:
    from diffusers import PNDMScheduler
    from nodegraph_diffusion.sampling import LoopInput, draw_noise, make_generator, run_loop

    def run(
        units: list[Any],
        ctx: Any = None,
        seed: int = SEED,
        steps: int = STEPS,
        cfg: float = 7.5,
        size: int = 64,
    ) -> torch.Tensor:
        generator = make_generator(seed)
        shape = (1, 4, size // 8, size // 8)
        noise = draw_noise(shape, generator)
        scheduler = PNDMScheduler.from_config(tiny["scheduler"].config)
        pos, neg = embeds
        req = LoopInput(
            unet=tiny["unet"],
            scheduler=scheduler,
            positive=pos,
            negative=neg,
            latents=torch.zeros(shape),
            noise=noise,
            generator=generator,
            steps=steps,
            cfg=cfg,
            conditions=units,
        )
        return run_loop(req, ctx if ctx is not None else make_ctx()).latents

    return run


@pytest.fixture(scope="session")
def control_image() -> Callable[..., torch.Tensor]:
    """`control_image(seed, size=64)`: a random control image (1, 3, size, size) in [0, 1]."""

    def make(seed: int, size: int = 64) -> torch.Tensor:
        return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))

    return make


@pytest.fixture(scope="session")
def xl_base() -> Any:
    """The tiny SDXL (builtin:tinyxl) as a StableDiffusionXLPipeline; tests build other pipelines of its
    components and must not change them (copy the UNet before load_ip_adapter)."""
    from tests.diffusion.test_sdxl import xl_pipe

    return xl_pipe()


@pytest.fixture(scope="session")
def xl_nets(xl_base: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two perturbed SDXL ControlNets (`cn-a`, `cn-b`) and a T2I-Adapter-XL (`adapter`) of the tiny SDXL
    UNet, saved as diffusers folders."""
    from nodegraph_control.tiny_control import build_tiny_adapter_xl, build_tiny_controlnet

    root = tmp_path_factory.mktemp("xl-control")
    models = {"cn-a": build_tiny_controlnet(xl_base.unet, seed=3),
              "cn-b": build_tiny_controlnet(xl_base.unet, seed=5),
              "adapter": build_tiny_adapter_xl(xl_base.unet, seed=7)}
    for name, model in models.items():
        model.save_pretrained(root / name, safe_serialization=True)
    return {name: root / name for name in models}
