"""Is a batch of seeds through one sampler call bit-identical to the seeds one by one? (CPU fp32)

    python bench/batch_exactness.py            # builtin:tinyworld, 64x64, 20 steps DPM++ 2M, 8 seeds

Decides whether a seed sweep may batch its variants: a sweep must give each variant exactly the image a
single run gives. Three levels, each compared batched vs one by one:
- `unet`: one UNet forward, rows of a [uncond, cond] x N batch vs N calls of batch 2;
- `ops`: a 3x3 convolution and a linear layer at the tiny model's sizes (which op differs);
- `pipeline`: diffusers' StableDiffusionPipeline with a list of N generators (each row gets its seed's
  noise) vs N single-seed calls — end to end, images in [0, 1].
Prints one JSON object: bitwise equality and max abs difference per case; timings of the pipeline case.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def _compare(big: torch.Tensor, rows: torch.Tensor) -> dict[str, Any]:
    return {"bitwise": bool(torch.equal(big, rows)), "max_abs": float((big - rows).abs().max())}


def unet_case(unet: Any, size: int, n: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2 * n, unet.config.in_channels, size, size, generator=g)
    ctx = torch.randn(2 * n, 77, unet.config.cross_attention_dim, generator=g)
    t = torch.tensor(500)
    with torch.no_grad():
        big = unet(x, t, encoder_hidden_states=ctx).sample
        rows = torch.cat([unet(x[2 * i:2 * i + 2], t, encoder_hidden_states=ctx[2 * i:2 * i + 2]).sample
                          for i in range(n)])
    return _compare(big, rows)


def op_cases(n: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(2)
    out: dict[str, Any] = {}
    for name, op, shape in (("conv3x3_32ch_8x8", torch.nn.Conv2d(32, 32, 3, padding=1), (32, 8, 8)),
                            ("conv3x3_32ch_32x32", torch.nn.Conv2d(32, 32, 3, padding=1), (32, 32, 32)),
                            ("linear_77x64", torch.nn.Linear(64, 64), (77, 64))):
        x = torch.randn(n, *shape, generator=g)
        with torch.no_grad():
            out[name] = _compare(op(x), torch.cat([op(x[i:i + 1]) for i in range(n)]))
    return out


def pipeline_case(folder: Path, seeds: list[int], steps: int, size: int) -> dict[str, Any]:
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    prompt = "a big red circle in the center, blue background"
    common = {"num_inference_steps": steps, "guidance_scale": 3.0, "height": size, "width": size,
              "output_type": "pt"}
    t0 = time.perf_counter()
    single = torch.cat([pipe(prompt, generator=torch.Generator().manual_seed(s), **common).images
                        for s in seeds])
    t1 = time.perf_counter()
    batched = pipe(prompt, generator=[torch.Generator().manual_seed(s) for s in seeds],
                   num_images_per_prompt=len(seeds), **common).images
    t2 = time.perf_counter()
    return {**_compare(batched, single), "single_s": round(t1 - t0, 3), "batched_s": round(t2 - t1, 3),
            "speedup": round((t1 - t0) / (t2 - t1), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import UNet2DConditionModel
    from nodegraph_diffusion.paths import BUILTIN_DIR

    folder = BUILTIN_DIR / "tinyworld"
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    report = {
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "unet": {f"latent{size}_seeds{n}": unet_case(unet, size, n) for size in (8, 32) for n in (4, 16)},
        "ops": op_cases(16),
        "pipeline": pipeline_case(folder, list(range(1, args.seeds + 1)), args.steps, args.size),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
