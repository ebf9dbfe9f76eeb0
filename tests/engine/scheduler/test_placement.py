"""Device/dtype policy: auto picks CUDA, then MPS, then CPU; graph-level and per-node overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nodegraph import Engine, RunOptions
from nodegraph.errors import GraphError, NodegraphError
from nodegraph.runtime import devices
from nodegraph.runtime.placement import NodePlacement, RuntimeSettings, merged_options

GRAPH = """
version: 1
runtime: {runtime}
nodes:
  a: {{type: core.text, value: hi}}
  b: {{type: core.join_text, parts: ["@a", "@a"]}}
"""


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert devices.resolve_device("auto").type == "cpu"


def test_half_precision_on_gpus_fp32_on_cpu() -> None:
    assert devices.resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert devices.resolve_dtype("auto", torch.device("mps")) == torch.float16
    assert devices.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert devices.resolve_dtype("bf16", torch.device("cuda")) == torch.bfloat16


@pytest.mark.parametrize(("text", "size"), [("2GB", 2 * 10**9), ("1500MiB", 1500 * 2**20), ("0.5g", 5 * 10**8),
                                            ("1024", 1024), (3000, 3000)])
def test_sizes(text: Any, size: int) -> None:
    assert devices.parse_size(text) == size


@pytest.mark.parametrize("text", ["two GB", "-1GB", "5 parsecs", ""])
def test_bad_sizes_are_user_errors(text: str) -> None:
    with pytest.raises(NodegraphError, match="is not a size"):
        devices.parse_size(text)


def test_default_vram_budget_is_total_minus_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "device_total_bytes", lambda key: 80 * 2**30 if key == "cuda:0" else None)
    assert devices.default_vram_budget("cuda:0") == 72 * 2**30  # 10% of 80 GiB > 2 GiB
    assert devices.default_vram_budget("cpu") is None


def test_command_line_wins_over_the_graph_and_auto_leaves_the_graph_setting() -> None:
    settings = RuntimeSettings(device="cpu", dtype="bfloat16", optimize="basic")
    merged = merged_options(RunOptions(), settings)
    assert (merged.device, merged.dtype, merged.optimize) == ("cpu", "bfloat16", "basic")
    given = merged_options(RunOptions(device="cuda", dtype="float32", optimize="none"), settings)
    assert (given.device, given.dtype, given.optimize) == ("cuda", "float32", "none")


def test_per_node_overrides_and_portable_fallback() -> None:
    from nodegraph.runtime.placement import NodeSetting

    placement = NodePlacement("cpu", "auto", {"vae": NodeSetting(dtype="bfloat16"),
                                              "far": NodeSetting(device="cuda:7")})
    assert placement.resolve("unet") == (torch.device("cpu"), torch.float32)
    assert placement.resolve("vae") == (torch.device("cpu"), torch.bfloat16)
    if not torch.cuda.is_available() or torch.cuda.device_count() < 8:
        assert placement.resolve("far") == (torch.device("cpu"), torch.float32)
        assert "lacks" in placement.notes[0]


def _graph(tmp_path: Path, runtime: str) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(GRAPH.format(runtime=runtime))
    return path


def test_graph_runtime_block_reaches_the_nodes(tmp_path: Path) -> None:
    engine = Engine()
    path = _graph(tmp_path, "{device: cpu, dtype: bfloat16, nodes: {b: {dtype: float32}}}")
    plan = engine.load(path)
    assert plan.resolved["runtime"]["dtype"] == "bfloat16"  # kept in the resolved graph (PNG metadata)
    from nodegraph.runtime.context import RunContext
    from nodegraph.runtime.placement import runtime_settings

    settings = runtime_settings(plan)
    options = merged_options(RunOptions(out_dir=tmp_path / "o"), settings)
    run = RunContext(options, engine.resources, tmp_path / "s",
                     placement=NodePlacement(options.device, options.dtype, settings.nodes))
    assert run.for_node("a", "core.text").dtype == torch.bfloat16
    assert run.for_node("b", "core.join_text").dtype == torch.float32
    result = engine.run(path, options=RunOptions(out_dir=tmp_path / "o"))
    assert result.outputs["b"]["out"] == "hi, hi"
    assert result.report_json()["resources"]["loads"] == 0


@pytest.mark.parametrize(("runtime", "message"), [
    ("{device: tpu}", "unknown device 'tpu'"),
    ("{optimize: ludicrous}", "unknown optimize level"),
    ("{nodes: {zz: {device: cpu}}}", "no node 'zz'"),
    ("{speed: 3}", "unknown key 'speed'"),
    ("[cpu]", "'runtime' must be a mapping"),
])
def test_bad_runtime_blocks_are_reported_at_load(tmp_path: Path, runtime: str, message: str) -> None:
    with pytest.raises(GraphError, match=message):
        Engine().load(_graph(tmp_path, runtime))
