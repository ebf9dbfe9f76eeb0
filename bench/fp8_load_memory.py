"""Peak host memory of loading an fp8 transformer file: diffusers' way vs transformer_files.fp8_model.

diffusers' way is `from_single_file(file, torch_dtype=compute)` then `enable_layerwise_casting`: every
weight is held at the compute dtype before the hooked layers go back to fp8. `fp8_model` assigns the
file's tensors and casts only the layers layerwise casting leaves out. A random FLUX.1-dev-width
transformer (`--layers` double blocks, twice as many single ones; fp8 weights, bf16 rest) is written
once; each way loads it in a fresh process, alternating, and reports its peak RSS (VmHWM, Linux) above
its peak after imports. Prints one JSON object (MiB: min and median per way).

    python bench/fp8_load_memory.py --layers 1 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's nodegraph
    sys.path.insert(0, str(ROOT))

FLUX_DEV = {"patch_size": 1, "in_channels": 64, "attention_head_dim": 128, "num_attention_heads": 24,
            "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
            "axes_dims_rope": (16, 56, 56)}


def write_model(folder: Path, layers: int) -> Path:
    """config.json + an fp8 file (2-D weights e4m3fn, the rest bf16) of random FLUX.1-dev-width weights."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    config = {**FLUX_DEV, "num_layers": layers, "num_single_layers": 2 * layers}
    with init_empty_weights():
        model = FluxTransformer2DModel(**config)
    model.register_to_config(**config)
    model.save_config(folder)
    state = {}
    for name, param in model.state_dict().items():
        value = (torch.randn(param.shape, dtype=torch.bfloat16) * 0.02)
        state[name] = value.to(torch.float8_e4m3fn) if value.ndim == 2 else value
    save_file(state, str(folder / "transformer-fp8.safetensors"))
    return folder


PROBE = """
import json, sys, torch
def hwm():  # peak RSS of this process image (ru_maxrss would carry the parent's peak over the fork)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
from diffusers import FluxTransformer2DModel
from nodegraph_diffusion.owned import read_safetensors
from nodegraph_diffusion.transformer_files import fp8_model
way, folder = sys.argv[1], sys.argv[2]
before = hwm()
file = folder + "/transformer-fp8.safetensors"
if way == "diffusers":
    m = FluxTransformer2DModel.from_single_file(file, config=folder, local_files_only=True,
                                                torch_dtype=torch.bfloat16)
    m.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
else:
    config = FluxTransformer2DModel.load_config(folder)
    m = fp8_model(FluxTransformer2DModel, config, read_safetensors(__import__("pathlib").Path(file)),
                  torch.float8_e4m3fn, torch.bfloat16)
after = hwm()
resident = sum(t.numel() * t.element_size() for t in m.state_dict().values())
print(json.dumps({"peak_mib": (after - before) / 1024, "resident_mib": resident / 2**20}))
"""


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ng_fp8_mem_") as tmp:
        folder = write_model(Path(tmp), args.layers)
        size = (folder / "transformer-fp8.safetensors").stat().st_size / 2**20
        peaks: dict[str, list[float]] = {"diffusers": [], "fp8_model": []}
        resident: dict[str, float] = {}
        for _ in range(args.repeats):
            for way in peaks:
                out = subprocess.run([sys.executable, "-c", PROBE, way, str(folder)], cwd=ROOT, check=True,
                                     capture_output=True, text=True).stdout.strip().splitlines()[-1]
                data = json.loads(out)
                peaks[way].append(data["peak_mib"])
                resident[way] = round(data["resident_mib"], 1)
    print(json.dumps({"bench": "fp8_load_memory", "layers": args.layers, "file_mib": round(size, 1),
                      "compute_dtype": "bfloat16", "resident_mib": resident,
                      "peak_above_imports_mib": {k: {"min": round(min(v), 1),
                                                     "median": round(statistics.median(v), 1)}
                                                 for k, v in peaks.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
