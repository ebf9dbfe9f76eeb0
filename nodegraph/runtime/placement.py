"""Where and how each node runs: the graph's `runtime:` block, merged with the run's options.

    runtime:
      device: auto            # auto | cpu | cuda | cuda:N | mps  (the command line wins when given)
      dtype: auto             # auto | float32 | float16 | bfloat16
      optimize: basic         # none | basic | compile | max (see nodegraph_diffusion.optimize)
      nodes:                  # per-node overrides; they win over everything
        image: {device: cpu, dtype: float32}

Precedence: a node's own setting, then the command line / `RunOptions` (when not `auto`), then the
graph's setting, then `auto` (CUDA, then MPS, then CPU; half precision on GPUs, fp32 on CPU).
A node's device that this machine lacks falls back to the run's device with a note, so a graph
written for two GPUs still runs on a laptop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from nodegraph.document.plan import Plan
from nodegraph.errors import GraphError, NodegraphError, Problem

DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPE_NAMES = ("auto", "float32", "fp32", "float16", "fp16", "bfloat16", "bf16")
OPTIMIZE_LEVELS = ("none", "basic", "compile", "max")
_KEYS = ("device", "dtype", "optimize", "nodes")
_NODE_KEYS = ("device", "dtype")


@dataclass(frozen=True)
class NodeSetting:
    """A node's own device and dtype (None: the run's)."""

    device: str | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class RuntimeSettings:
    """The graph's `runtime:` block, validated."""

    device: str = "auto"
    dtype: str = "auto"
    optimize: str | None = None
    nodes: dict[str, NodeSetting] = field(default_factory=dict)


def _check(value: Any, allowed: str, where: str, problems: list[str]) -> str | None:
    if value is None:
        return None
    text = str(value)
    if allowed == "device" and not DEVICE_RE.match(text):
        problems.append(f"{where}: unknown device '{text}' (use auto, cpu, cuda, cuda:N or mps)")
    elif allowed == "dtype" and text not in DTYPE_NAMES:
        problems.append(f"{where}: unknown dtype '{text}' (use auto, float32, float16 or bfloat16)")
    elif allowed == "optimize" and text not in OPTIMIZE_LEVELS:
        problems.append(f"{where}: unknown optimize level '{text}' (use {', '.join(OPTIMIZE_LEVELS)})")
    return text


def runtime_settings(plan: Plan) -> RuntimeSettings:
    """Read and check the plan's `runtime:` block; raises `GraphError` listing every problem."""
    block = plan.extra.get("runtime")
    if block is None:
        return RuntimeSettings()
    problems: list[str] = []
    if not isinstance(block, dict):
        problems.append("'runtime' must be a mapping like {device: cuda, dtype: float16, optimize: basic}")
        block = {}
    for key in block:
        if key not in _KEYS:
            problems.append(f"runtime: unknown key '{key}' (known: {', '.join(_KEYS)})")
    device = _check(block.get("device"), "device", "runtime.device", problems) or "auto"
    dtype = _check(block.get("dtype"), "dtype", "runtime.dtype", problems) or "auto"
    optimize = _check(block.get("optimize"), "optimize", "runtime.optimize", problems)
    nodes: dict[str, NodeSetting] = {}
    raw_nodes = block.get("nodes") or {}
    if not isinstance(raw_nodes, dict):
        problems.append("runtime.nodes must map node ids to {device: ..., dtype: ...}")
        raw_nodes = {}
    for node_id, body in raw_nodes.items():
        where = f"runtime.nodes.{node_id}"
        if node_id not in plan.nodes:
            problems.append(f"{where}: no node '{node_id}' in this graph")
            continue
        if not isinstance(body, dict) or any(k not in _NODE_KEYS for k in body):
            problems.append(f"{where} must be a mapping with 'device' and/or 'dtype'")
            continue
        nodes[node_id] = NodeSetting(_check(body.get("device"), "device", f"{where}.device", problems),
                                     _check(body.get("dtype"), "dtype", f"{where}.dtype", problems))
    if problems:
        file = str(plan.file) if plan.file else None
        raise GraphError([Problem(p, file=file) for p in problems])
    return RuntimeSettings(device, dtype, optimize, nodes)


def merged_options(options: Any, settings: RuntimeSettings) -> Any:
    """`RunOptions` with the graph's settings filled in where the options say `auto` / nothing."""
    given = getattr(options, "optimize", None)
    if given is not None and given not in OPTIMIZE_LEVELS:
        raise NodegraphError(f"unknown optimize level '{given}' (use {', '.join(OPTIMIZE_LEVELS)})")
    changes: dict[str, Any] = {}
    if options.device == "auto" and settings.device != "auto":
        changes["device"] = settings.device
    if options.dtype == "auto" and settings.dtype != "auto":
        changes["dtype"] = settings.dtype
    if getattr(options, "optimize", None) is None and settings.optimize is not None:
        changes["optimize"] = settings.optimize
    return replace(options, **changes) if changes else options


class NodePlacement:
    """Resolves (and remembers) the torch device and dtype of each node of one run."""

    def __init__(self, device: str, dtype: str, nodes: dict[str, NodeSetting] | None = None) -> None:
        self.device_name = device
        self.dtype_name = dtype
        self.nodes = dict(nodes or {})
        self.notes: list[str] = []
        self._resolved: dict[tuple[str, str], tuple[Any, Any]] = {}

    def resolve(self, node_id: str | None = None) -> tuple[Any, Any]:
        """(torch.device, torch.dtype) for a node (the run's own for None or a node without overrides)."""
        from nodegraph.runtime.devices import device_available, resolve_device, resolve_dtype

        setting = self.nodes.get(node_id or "", NodeSetting())
        device_name = setting.device or self.device_name
        if setting.device and not device_available(setting.device):
            self.notes.append(f"node '{node_id}' asks for device '{setting.device}', which this machine "
                              f"lacks; it runs on the run's device ({self.device_name})")
            self.nodes[node_id or ""] = replace(setting, device=None)
            device_name = self.device_name
        dtype_name = setting.dtype or self.dtype_name  # `auto` resolves per device
        cache_key = (device_name, dtype_name)
        if cache_key not in self._resolved:
            device = resolve_device(device_name)
            self._resolved[cache_key] = (device, resolve_dtype(dtype_name, device))
        return self._resolved[cache_key]
