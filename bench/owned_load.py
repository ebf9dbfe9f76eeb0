"""Loading a UNet from a diffusers folder: `from_pretrained` + a clone of every tensor (the old
`own_storage`) vs reading the weights straight into owned memory (`owned.diffusers_from_folder`).

Builds a random-init UNet of about 136 MB (SD-like blocks, narrower) in a scratch folder, then
alternates the two loaders; prints JSON with min/median seconds and the peak RSS growth of each.
Both give tensors that own aligned memory; the test suite checks that and the equality of outputs.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "plugins"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


def build(folder: Path) -> float:
    """Save a random UNet of ~136 MB (fp32) into folder/unet; returns its size in MB."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(block_out_channels=(128, 256, 512, 512), layers_per_block=1,
                                cross_attention_dim=768, attention_head_dim=8, sample_size=64)
    unet.save_pretrained(folder / "unet")
    return sum(p.numel() * 4 for p in unet.parameters()) / 1e6


def clone_all(module):  # the old own_storage: every tensor copied
    import torch

    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            t.data = t.data.clone()
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch
    from diffusers import UNet2DConditionModel
    from nodegraph_diffusion.owned import diffusers_from_folder

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mb = build(folder)
        loaders = {
            "from_pretrained+clone": lambda: clone_all(
                UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True).eval()),
            "owned": lambda: diffusers_from_folder(UNet2DConditionModel, folder, "unet"),
        }
        times: dict[str, list[float]] = {k: [] for k in loaders}
        for _ in range(args.repeats):
            for name, load in loaders.items():
                start = time.perf_counter()
                model = load()
                times[name].append(time.perf_counter() - start)
                assert model is not None
                del model
    print(json.dumps({
        "bench": "owned_load", "unet_mb": round(mb, 1), "repeats": args.repeats,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": {k: {"min": round(min(v), 3), "median": round(statistics.median(v), 3)}
                    for k, v in times.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
