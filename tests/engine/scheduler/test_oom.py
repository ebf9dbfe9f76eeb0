"""Out-of-memory fallbacks, with OOM simulated by stubs raising torch.OutOfMemoryError."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from nodegraph import Engine, RunOptions
from nodegraph.api import NodeContext, node
from nodegraph.errors import NodegraphError
from nodegraph.nodes.registry import PackSource, build_registry
from nodegraph.testing import ToyPack
from tests.engine.runtime.conftest import make_plan
from tests.engine.scheduler.conftest import FakeModel, fake_manager


def _registry(fail_times: int) -> Any:
    calls = {"n": 0}

    @node("oomy.grow", version="1.0.0")
    def grow(ctx: NodeContext, value: float) -> float:
        """Runs out of memory on its first calls while a model sits on the device."""
        calls["n"] += 1
        if calls["n"] <= fail_times:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return value * 2

    module = ModuleType("oomy_nodes")
    grow.__module__ = module.__name__
    module.grow = grow  # type: ignore[attr-defined]
    return build_registry([PackSource("oomy", "1", "oomy_nodes", lambda: ToyPack(module))])


def _engine(fail_times: int) -> Engine:
    manager = fake_manager({"idle": 100}, vram_budget=1000)
    with manager.use("idle", lambda: FakeModel("idle"), device="cuda:0"):
        pass
    return Engine(_registry(fail_times), resources=manager)


def test_oom_offloads_idle_models_retries_and_says_so(tmp_path: Path) -> None:
    engine = _engine(fail_times=1)
    plan = make_plan(engine.registry, {"g": {"type": "oomy.grow", "value": 2.0}})
    result = engine.run(plan, options=RunOptions(out_dir=tmp_path))
    assert result.outputs["g"]["out"] == 4.0
    assert engine.resources.where("idle") == "cpu"
    assert any("out of memory; offloaded 1 idle model(s) and retried" in n for n in result.notes)


def test_oom_twice_is_a_user_error_with_advice(tmp_path: Path) -> None:
    engine = _engine(fail_times=2)
    plan = make_plan(engine.registry, {"g": {"type": "oomy.grow", "value": 2.0}})
    with pytest.raises(NodegraphError, match="ran out of memory even with every other model offloaded"):
        engine.run(plan, options=RunOptions(out_dir=tmp_path))
    assert not list(tmp_path.iterdir())  # nothing written


def test_vae_decode_falls_back_to_tiles(tmp_path: Path, make_ctx: Any) -> None:
    from nodegraph_diffusion.loading import component_key, make_source
    from nodegraph_diffusion.paths import BUILTIN_DIR
    from nodegraph_diffusion.sampling import decode
    from nodegraph_diffusion.types import Latents, VaeHandle
    from nodegraph_diffusion.vae_nodes import vae_decode

    ctx = make_ctx()
    handle = VaeHandle(make_source(BUILTIN_DIR / "tinyworld", ctx))
    latents = Latents(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    whole = vae_decode(ctx, handle, latents)
    vae = ctx.resources._entries[component_key(handle.source, "vae")].value

    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    vae.decode = out_of_memory  # the one-piece decode fails; tiled decoding uses the decoder directly
    try:
        tiled = vae_decode(ctx, handle, latents)
    finally:
        del vae.decode
    assert ctx.run.notes and "decoded in 512px tiles" in ctx.run.notes[0]
    assert tiled.pixels.shape == whole.pixels.shape
    assert (tiled.pixels - whole.pixels).abs().max().item() <= 1e-5  # one tile: the same decode
    assert torch.equal(decode(vae, latents.samples), whole.pixels)


@pytest.fixture
def make_ctx(tmp_path: Path) -> Any:
    from nodegraph.runtime.context import RunContext
    from nodegraph.runtime.residency import ResidencyManager

    def make() -> Any:
        run = RunContext(RunOptions(out_dir=tmp_path / "o", device="cpu", dtype="float32"), ResidencyManager(),
                         tmp_path / "stage")
        return run.for_node("vae", "diffusion.vae_decode")

    return make
