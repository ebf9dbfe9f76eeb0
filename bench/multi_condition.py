"""Benchmark: the multi-condition sampler vs the plain sampler, and changing a LoRA weight vs a cold load.

Runs graphs/multi_condition.yaml (pose ControlNet + edge ControlNet + T2I-Adapter + LoRA in one
sampler) through the engine, with its result cache on, as a user iterating on a graph would:

- per-step cost: the `latents` (diffusion.sample) node's wall time / steps, for the graph as shipped
  ("multi") and for variants of the same graph: no condition and no LoRA ("plain"), the LoRA only, and
  each condition alone. A new seed each repeat makes only noise -> sampler -> decode -> save re-run;
  models stay resident. `multi_vs_plain` is the ratio of the medians.
- LoRA weight change: a new `lora_weight` each repeat on a warm engine; `lora_change_run_s` is the
  whole re-run (LoRA node, text encoding, sampling, decode, save — what the user waits for), with the
  residency manager's load count of the base UNet before and after (it must not grow: the weight is an
  adapter setting, `set_adapters`, not a reload). `lora_switch_s` is the weight switch alone (entering
  `use_unet` with the new weight on the resident UNet). Against it: `model_load_s`, loading the base
  model's UNet + text encoder + VAE from disk, and `cold_run_s`, the whole graph on a fresh engine
  (every model loaded).

    python bench/multi_condition.py                       # CPU, built-in tiny models, 64x64, 20 steps
    python bench/multi_condition.py --sd15 --device cuda  # SD1.5-sized random models, 512x512, 30 steps, fp16

`--sd15` builds SD1.5-architecture models with random weights (no download) with bench/txt2img.py's
`build_sd15`, plus two SD1.5-sized ControlNets (`ControlNetModel.from_unet`), a full T2I-Adapter with
the published SD1.5 configuration and a rank-32 LoRA, saved once to a temp folder. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's nodegraph and bench
    sys.path.insert(0, str(ROOT))

from bench.common import scratch_dir, sync  # noqa: E402
from bench.txt2img import build_sd15  # noqa: E402

GRAPH = ROOT / "graphs" / "multi_condition.yaml"
CONDITIONS = {"pose_cn": "pose ControlNet", "edge_cn": "edge ControlNet", "edge_t2i": "T2I-Adapter"}


def build_sd15_controls(model: Path, folder: Path) -> dict[str, str]:
    """SD1.5-sized control models and LoRA for the random-init SD1.5 model at `model` (graph overrides)."""
    from diffusers import ControlNetModel, T2IAdapter, UNet2DConditionModel
    from nodegraph_diffusion.lora import save_tiny_style_lora

    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", local_files_only=True)
    generator = torch.Generator().manual_seed(0)
    net = ControlNetModel.from_unet(unet)
    net.save_pretrained(folder / "pose_cn", safe_serialization=True)
    with torch.no_grad():  # a second, different net (its own residency entry, like two real files)
        net.controlnet_mid_block.weight.copy_(torch.randn(net.controlnet_mid_block.weight.shape,
                                                          generator=generator) * 0.01)
    net.save_pretrained(folder / "edge_cn", safe_serialization=True)
    adapter = T2IAdapter(in_channels=3, channels=list(unet.config.block_out_channels), num_res_blocks=2,
                         downscale_factor=8, adapter_type="full_adapter")
    adapter.save_pretrained(folder / "adapter", safe_serialization=True)
    lora = save_tiny_style_lora(model, folder / "lora", rank=32)
    return {"model": str(model), "pose_controlnet": str(folder / "pose_cn"),
            "edge_controlnet": str(folder / "edge_cn"), "adapter": str(folder / "adapter"), "lora": str(lora)}


def variants(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The shipped graph ("multi") and the same graph with fewer conditions / no LoRA."""
    sampler = document["nodes"]["latents"]

    def variant(conditions: list[str], lora: bool) -> dict[str, Any]:
        doc = copy.deepcopy(document)
        doc["nodes"]["latents"].pop("conditions")
        if conditions:
            doc["nodes"]["latents"]["conditions"] = [f"@{c}" for c in conditions]
        if not lora:
            doc["nodes"]["latents"]["unet"] = "@model.unet"
        return doc

    out = {"plain": variant([], False), "lora": variant([], True)}
    for name in CONDITIONS:
        out[name] = variant([name], False)
    out["multi"] = variant([c.lstrip("@") for c in sampler["conditions"]], True)
    return out


def node_s(result: Any, node_id: str) -> float:
    """Wall time of one node in a run, in seconds (it must have executed)."""
    for event in result.events:
        if event.node == node_id:
            assert event.status == "executed", f"{node_id} came from the cache"
            return float(event.wall_ms) / 1000.0
    raise KeyError(node_id)


def main(argv: list[str] | None = None) -> int:
    with scratch_dir("ng_bench_mc_") as tmp:
        return bench(tmp, argv)


def bench(tmp: Path, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd15", action="store_true", help="SD1.5-sized random models, 512², 30 steps, fp16")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda with --sd15, else cpu)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from nodegraph_diffusion.loading import load_text_encoder, load_unet, load_vae, use_unet
    from nodegraph_diffusion.types import LoraPatch, UNetHandle

    from nodegraph import Engine, RunOptions
    from nodegraph.runtime.context import RunContext
    from nodegraph.runtime.residency import ResidencyManager

    device = args.device or ("cuda" if args.sd15 else "cpu")
    dtype = "float16" if args.sd15 and device != "cpu" else "float32"
    steps = args.steps or (30 if args.sd15 else 20)
    size = args.size or (512 if args.sd15 else 64)
    overrides: dict[str, Any] = {"steps": steps, "width": size, "height": size}
    if args.sd15:
        overrides.update(build_sd15_controls(build_sd15(tmp), tmp))
    options = RunOptions(out_dir=tmp / "out", device=device, dtype=dtype, show_progress=False)
    document = yaml.safe_load(GRAPH.read_text())

    with torch.inference_mode(False):
        # per-step cost of the sampler, per variant (seed changes: only the sampler chain re-runs)
        engine = Engine()
        plans = variants(document)
        sampler_s: dict[str, list[float]] = {name: [] for name in plans}
        for doc in plans.values():  # warm-up: loads, allocator, kernels
            engine.run(engine.load(doc, {**overrides, "seed": 0}, file=GRAPH), options=options)
        for i in range(args.repeats):
            names = list(plans)
            for name in names[i % len(names):] + names[:i % len(names)]:  # rotate the order
                plan = engine.load(plans[name], {**overrides, "seed": 1000 + i}, file=GRAPH)
                sync(device)
                sampler_s[name].append(node_s(engine.run(plan, options=options), "latents"))
        per_step_ms = {n: round(statistics.median(t) / steps * 1000, 3) for n, t in sampler_s.items()}

        # changing the LoRA weight on a warm engine vs loading cold
        first = engine.run(engine.load(document, {**overrides, "seed": 0}, file=GRAPH), options=options)
        source = first.outputs["model"]["unet"].source
        unet_key = f"{source.fingerprint}:unet"
        loads_before = (engine.resources.load_count(unet_key), engine.resources.load_count())
        change_s, executed = [], set()
        for i in range(args.repeats):
            plan = engine.load(document, {**overrides, "seed": 0, "lora_weight": 0.5 + 0.05 * i}, file=GRAPH)
            sync(device)
            start = time.perf_counter()
            result = engine.run(plan, options=options)
            sync(device)
            change_s.append(time.perf_counter() - start)
            executed |= set(result.executed)
        loads_after = (engine.resources.load_count(unet_key), engine.resources.load_count())

        cold_s = []
        for i in range(max(1, args.repeats // 2)):
            fresh = Engine()
            plan = fresh.load(document, {**overrides, "seed": i}, file=GRAPH)
            sync(device)
            start = time.perf_counter()
            fresh.run(plan, options=options)
            sync(device)
            cold_s.append(time.perf_counter() - start)
            del fresh

        def node_context(resources: Any) -> Any:
            staging = tmp / "staging"
            run = RunContext(options=options, resources=resources, staging_dir=staging, graph_file=GRAPH)
            return run.for_node("bench", "bench.load")

        load_s, switch_s = [], []
        lora = first.outputs["styled"]["unet"].loras[0]
        for _ in range(args.repeats):
            ctx = node_context(ResidencyManager())
            sync(device)
            start = time.perf_counter()
            for loader in (load_unet, load_text_encoder, load_vae):
                loader(source, ctx).to(device=ctx.device, dtype=ctx.dtype)
            sync(device)
            load_s.append(time.perf_counter() - start)
        ctx = node_context(engine.resources)  # the warm engine's resident UNet, LoRA already loaded
        for i in range(args.repeats):
            handle = UNetHandle(source, (LoraPatch(lora.path, lora.fingerprint, lora.name, 0.3 + 0.1 * i),))
            sync(device)
            start = time.perf_counter()
            with use_unet(ctx, handle):
                sync(device)
                switch_s.append(time.perf_counter() - start)
        assert engine.resources.load_count(unet_key) == 1

    med = statistics.median
    print(json.dumps({
        "device": torch.cuda.get_device_name() if device.startswith("cuda")
        else f"cpu ({torch.get_num_threads()} threads)",
        "model": "sd15-random-init" if args.sd15 else "builtin:tinyworld (+ -pose, -edge, -adapter, -style)",
        "graph": "graphs/multi_condition.yaml",
        "steps": steps,
        "size": f"{size}x{size}",
        "dtype": dtype,
        "repeats": args.repeats,
        "sampler_per_step_ms": per_step_ms,
        "multi_vs_plain": round(med(sampler_s["multi"]) / med(sampler_s["plain"]), 3),
        "lora_change_run_s": round(med(change_s), 4),
        "lora_change_executed": sorted(executed),
        "lora_switch_s": round(med(switch_s), 5),
        "model_load_s": round(med(load_s), 4),
        "cold_run_s": round(med(cold_s), 4),
        "lora_change_vs_cold_run": round(med(change_s) / med(cold_s), 3),
        "unet_loads_before_after_lora_changes": list(loads_before[:1] + loads_after[:1]),
        "all_loads_before_after_lora_changes": [loads_before[1], loads_after[1]],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
