"""Benchmark: the sigma-space sampler (diffusion.k_sampler path) vs diffusers' Euler, same UNet and steps.

Three samplers of the same latents, alternating after a warm-up, models resident: diffusers'
`StableDiffusionPipeline` with `EulerDiscreteScheduler` (`output_type="latent"`, prompt embeddings
given, so only the loop is timed), nodegraph's diffusers loop (`sampling.run_loop`, Euler) and the
k-sampler loop (`k_sampling.run_k_loop`, k-diffusion's `sample_euler` on ComfyUI's "normal" table).
All run `steps` UNet calls with CFG in one [uncond, cond] batch, so the difference is loop overhead
(ComfyUI's denoiser wrapping, k-diffusion's step code, the area bookkeeping of calc_cond_batch).
The schedules differ (ComfyUI's table vs diffusers'), so the latents are not compared.

    python bench/k_sampler.py                        # CPU, built-in tiny model, 64x64, 20 steps
    python bench/k_sampler.py --sd15 --device cuda   # SD1.5-sized random-init model, 512x512, 30 steps, fp16

Prints one JSON object: seconds per image (min, median) for each side and the ratios to diffusers.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's nodegraph
    sys.path.insert(0, str(ROOT))
from bench.common import bench_parser, emit, model_folder, scratch_dir, timed, workload  # noqa: E402


def main() -> None:
    parser = bench_parser(__doc__, repeats=5)
    args = parser.parse_args()
    device, steps, size = workload(args)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from nodegraph_diffusion.k_sampling import KLoopInput, comfy_noise, run_k_loop
    from nodegraph_diffusion.regions import Entry
    from nodegraph_diffusion.sampling import LoopInput, make_generator, run_loop
    from nodegraph_diffusion.sigmas import config_sigmas, ksampler_sigmas

    with scratch_dir() as tmp:
        folder = model_folder(args.sd15, tmp)
        pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype, safety_checker=None)
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        unet, cfg = pipe.unet, 7.5
        dim = int(unet.config.cross_attention_dim)
        g = torch.Generator().manual_seed(0)
        pos = torch.randn((1, 77, dim), generator=g).to(device, dtype)
        neg = torch.randn((1, 77, dim), generator=g).to(device, dtype)
        shape = (1, 4, size // 8, size // 8)
        model = config_sigmas(dict(pipe.scheduler.config))
        sigmas = ksampler_sigmas(model, "normal", steps, 1.0, "euler").to(device)

        def diffusers_side() -> Any:
            return pipe(
                prompt_embeds=pos,
                negative_prompt_embeds=neg,
                num_inference_steps=steps,
                guidance_scale=cfg,
                height=size,
                width=size,
                output_type="latent",
                generator=make_generator(1),
            )

        def loop_side() -> Any:
            generator = make_generator(1)
            noise = torch.randn(shape, generator=generator).to(device, dtype)
            req = LoopInput(
                unet=unet,
                scheduler=EulerDiscreteScheduler.from_config(pipe.scheduler.config),
                positive=pos,
                negative=neg,
                latents=torch.zeros(shape, device=device, dtype=dtype),
                noise=noise,
                generator=generator,
                steps=steps,
                cfg=cfg,
            )
            return run_loop(req)

        def k_side() -> Any:
            req = KLoopInput(
                unet=unet,
                model=model,
                sampler="euler",
                sigmas=sigmas,
                positive=[Entry(pos)],
                negative=[Entry(neg)],
                latents=torch.zeros(shape, device=device, dtype=dtype),
                noise=comfy_noise(shape, 1).to(device, dtype),
                seed=1,
                cfg=cfg,
            )
            return run_k_loop(req)

        sides = {"diffusers_pipeline": diffusers_side, "run_loop_euler": loop_side, "k_sampler_euler": k_side}
        for fn in sides.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {name: [] for name in sides}
        with torch.no_grad():
            for _ in range(args.repeats):
                for name, fn in sides.items():
                    times[name].append(timed(device, fn))
    base = statistics.median(times["diffusers_pipeline"])
    emit(
        {
            "bench": "k_sampler",
            "model": "sd15-random" if args.sd15 else "builtin:tinyworld",
            "steps": steps,
            "size": size,
            "repeats": args.repeats,
            "dtype": str(dtype),
            "seconds": {
                name: {"min": round(min(t), 4), "median": round(statistics.median(t), 4)}
                for name, t in times.items()
            },
            "median_ratio_to_diffusers": {
                name: round(statistics.median(t) / base, 3) for name, t in times.items()
            },
        },
        device,
    )


if __name__ == "__main__":
    main()
