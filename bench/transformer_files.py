"""Benchmark: graphs/flux_gguf.yaml on transformer files (plain BFL, fp8, GGUF Q8_0/Q4_0) vs FluxPipeline.

For each storage the tiny transformer (builtin:tinyflux's, or FLUX.1-dev's architecture cut to
`--layers` blocks with `--dev`, random weights) is written as the file people download; the graph
loads it with diffusion.load_transformer, the pipeline gets the transformer diffusers loads from a
diffusers-layout copy of the same stored weights. Same prompt, size, steps, seed; the engine without
its result cache; models resident on both sides; runs alternate after a warm-up. Prints one JSON
object: per storage, the resident transformer's bytes (ours and diffusers') and min/median seconds per
run of each side.

    python bench/transformer_files.py                            # CPU, tiny, 64x64, 4 steps
    python bench/transformer_files.py --dev --layers 1 --size 256 --steps 2 --repeats 2
    python bench/transformer_files.py --dev --device cuda --dtype bfloat16 --size 1024 --steps 28
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's nodegraph
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests" / "diffusion"))  # the file writers the tests use
from bench.common import emit, scratch_dir, timed  # noqa: E402

GRAPH = ROOT / "graphs" / "flux_gguf.yaml"
PROMPT = "a big red circle in the center, blue background"
STORAGES = ("plain", "fp8", "Q8_0", "Q4_0")


def write_files(state: dict[str, torch.Tensor], storage: str, tmp: Path) -> tuple[Path, Path]:
    """(BFL-layout file for the graph, diffusers-layout file for the pipeline) of one storage."""
    from transformer_file_writers import fp8, to_bfl, write_gguf, write_safetensors

    bfl = to_bfl(state)
    if storage in ("plain", "fp8"):
        cast = fp8 if storage == "fp8" else dict
        return (write_safetensors(tmp / f"bfl-{storage}.safetensors", cast(bfl)),
                write_safetensors(tmp / f"diffusers-{storage}.safetensors", cast(state)))
    return (write_gguf(tmp / f"bfl-{storage}.gguf", bfl, storage),
            write_gguf(tmp / f"diffusers-{storage}.gguf", state, storage))


def diffusers_transformer(file: Path, storage: str, model: Path, dtype: torch.dtype) -> Any:
    from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig

    kwargs: dict[str, Any] = {"config": str(model), "subfolder": "transformer", "local_files_only": True,
                              "torch_dtype": dtype}
    if storage.startswith("Q"):
        kwargs["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    transformer = FluxTransformer2DModel.from_single_file(str(file), **kwargs)
    if storage == "fp8":
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    return transformer.eval()


def our_transformer_bytes(file: Path, model: Path, args: argparse.Namespace, tmp: Path) -> int:
    """Bytes of the transformer diffusion.load_transformer makes resident (parameters and buffers)."""
    from nodegraph_diffusion.loading import use_unet
    from nodegraph_diffusion.model_nodes import load_model
    from nodegraph_diffusion.transformer_nodes import load_transformer

    from nodegraph.runtime.context import RunContext, RunOptions
    from nodegraph.runtime.residency import ResidencyManager, module_bytes

    run = RunContext(options=RunOptions(device=args.device, dtype=args.dtype, out_dir=tmp / "bytes"),
                     resources=ResidencyManager(), staging_dir=tmp / "staging")
    ctx = run.for_node("bench", "diffusion.load_transformer")
    handle = load_transformer(ctx, str(file), load_model(ctx, str(model)).unet, config=str(model))
    with use_unet(ctx, handle) as transformer:
        return module_bytes(transformer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="FLUX.1-dev's widths (random), see bench/flux.py")
    parser.add_argument("--layers", type=int, default=1, help="--dev: double-stream blocks")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storages", default=",".join(STORAGES))
    args = parser.parse_args(argv)
    with scratch_dir() as tmp:
        return bench(args, tmp)


def bench(args: argparse.Namespace, tmp: Path) -> int:
    from diffusers import FluxPipeline
    from nodegraph_diffusion.paths import BUILTIN_DIR

    from nodegraph import Engine, RunOptions
    from nodegraph.runtime.residency import module_bytes

    dtype = getattr(torch, args.dtype)
    if args.dev:
        from bench.flux import build_flux_dev

        model = build_flux_dev(tmp, torch.bfloat16, args.layers, 1)
    else:
        model = BUILTIN_DIR / "tinyflux"
    pipe = FluxPipeline.from_pretrained(model, local_files_only=True, torch_dtype=dtype).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    state = {k: v.contiguous() for k, v in pipe.transformer.to("cpu", torch.float32).state_dict().items()}
    engine = Engine(cache_mb=0)
    options = RunOptions(out_dir=tmp / "out", device=args.device, dtype=args.dtype, show_progress=False)
    call = {"height": args.size, "width": args.size, "num_inference_steps": args.steps, "guidance_scale": 3.5}
    results: dict[str, Any] = {}
    for storage in args.storages.split(","):
        ours_file, theirs_file = write_files(state, storage, tmp)
        pipe.transformer = diffusers_transformer(theirs_file, storage, model, dtype).to(args.device)
        params = {"transformer": str(ours_file), "model": str(model), "seed": 1,
                  "steps": args.steps, "width": args.size, "height": args.size, "prompt": PROMPT}

        def graph() -> None:
            engine.run(GRAPH, params, options)  # noqa: B023 - run now, in this iteration

        def pipeline() -> None:
            pipe(PROMPT, **call, generator=torch.Generator().manual_seed(1))  # noqa: B023

        graph()
        pipeline()  # warm-up: loads, allocator
        times: dict[str, list[float]] = {"graph": [], "pipeline": []}
        for _ in range(args.repeats):
            times["graph"].append(timed(args.device, graph))
            times["pipeline"].append(timed(args.device, pipeline))
        ours = our_transformer_bytes(ours_file, model, args, tmp)
        results[storage] = {
            "file_mb": round(ours_file.stat().st_size / 2**20, 3),
            "transformer_mb": {"ours": round(ours / 2**20, 3),
                               "diffusers": round(module_bytes(pipe.transformer) / 2**20, 3)},
            **{f"{side}_s": {"min": round(min(t), 4), "median": round(statistics.median(t), 4)}
               for side, t in times.items()},
        }
    emit({"bench": "transformer_files", "model": "FLUX.1-dev widths" if args.dev else "builtin:tinyflux",
          "layers": args.layers if args.dev else None, "dtype": args.dtype, "size": args.size,
          "steps": args.steps, "repeats": args.repeats, "results": results}, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
