"""Shared fixtures of the diffusion tests (models, LoRA and sampling helpers). Keep them small.

- `make_ctx(**options)` -> a fresh `NodeContext` (own ResidencyManager, CPU fp32 unless told otherwise).
- `ctx`: one such context.
- `tiny_dir`: the committed built-in tiny model folder (read-only: never write into it).
- `tiny_pipe`: a `StableDiffusionPipeline` loaded from `tiny_dir` (function scope: tests may mutate it),
  its weights copied off the file's memory map like our loader does (`loading.own_storage`): CPU kernels
  pick paths by memory alignment, so without it equal weights can differ by 1 ulp.
- `tiny_single_file`: an original-layout single-file copy of the tiny model (session, in a tmp dir).
- `style_lora`: the built-in style LoRA file (diffusers/peft format, non-zero B).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def make_ctx(tmp_path: Path) -> Callable[..., Any]:
    from nodegraph.runtime.context import RunContext, RunOptions
    from nodegraph.runtime.residency import ResidencyManager

    def make(graph_file: Path | None = None, **options: Any) -> Any:
        options.setdefault("device", "cpu")
        options.setdefault("dtype", "float32")
        options.setdefault("out_dir", tmp_path / "out")
        run = RunContext(options=RunOptions(**options), resources=ResidencyManager(),
                         staging_dir=tmp_path / "staging", graph_file=graph_file)
        return run.for_node("test", "test.node")

    return make


@pytest.fixture
def ctx(make_ctx: Callable[..., Any]) -> Any:
    return make_ctx()


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    from nodegraph_diffusion.paths import BUILTIN_DIR

    return BUILTIN_DIR / "tinyworld"


@pytest.fixture
def tiny_pipe(tiny_dir: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    from nodegraph_diffusion.loading import own_storage

    pipe = StableDiffusionPipeline.from_pretrained(tiny_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        own_storage(part)
    return pipe


@pytest.fixture(scope="session")
def tiny_single_file(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodegraph_diffusion.tiny import save_single_file

    return save_single_file(tiny_dir, tmp_path_factory.mktemp("single") / "tinyworld.safetensors")


@pytest.fixture(scope="session")
def style_lora() -> Path:
    from nodegraph_diffusion.paths import BUILTIN_DIR

    return BUILTIN_DIR / "tinyworld-style" / "tinyworld-style.safetensors"
