"""Cost of converting an open_clip folder on load: nodegraph's conversion vs open_clip loading it itself.

One random-init open_clip model of a real architecture (`--config`, one of open_clip's model_configs;
default ViT-B-32, 151 M parameters) is saved as a hub folder (open_clip_config.json +
open_clip_model.safetensors). Each side then runs in a fresh process, alternating, `--repeats` times:
"ours" is `open_clip_folders.load_open_clip_model` (read the safetensors, rename into CLIPModel's keys,
`CLIPModel.from_pretrained(None, state_dict=...)`), plus the processor (`open_clip_processor`: the BPE
tokenizer and image processor built in memory); "open_clip" is what an open_clip user pays —
`CLIP(**model_cfg)` and `load_state_dict` of the same file (open_clip imported with the tests' stand-in
torchvision, as it cannot be installed here). Each process reports its seconds for the load alone (the
imports, transformers' lazy CLIP modules included, come before the clock starts) and its peak RSS
(ru_maxrss) less its RSS after the imports. Prints one JSON object: min/median seconds and
peak extra MiB per side, and the weights' size.

    python bench/open_clip_load.py [--config ViT-B-32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _one(side: str, folder: Path) -> dict[str, float]:
    """Load the folder once the `side`'s way, in this (fresh) process."""
    import transformers
    from nodegraph_multimodal.open_clip_config import read_open_clip_config
    from nodegraph_multimodal.open_clip_folders import load_open_clip_model, open_clip_processor
    from safetensors.torch import load_file

    from tests.multimodal.open_clip_reference import import_open_clip

    open_clip = import_open_clip() if side == "open_clip" else None
    # transformers' lazy modules load on first use: imports, not the load (a CLIPModel folder pays them too)
    _ = (transformers.CLIPModel, transformers.CLIPConfig, transformers.CLIPProcessor,
         transformers.CLIPImageProcessorPil, transformers.CLIPTokenizer)

    class Options:
        allow_pickle = False

    class Ctx:
        options = Options()

    base = _rss_mib()
    start = time.perf_counter()
    if side == "ours":
        load_open_clip_model(folder, Ctx())  # type: ignore[arg-type]
        open_clip_processor(read_open_clip_config(folder))
    else:
        cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
        model = open_clip.model.CLIP(**cfg).eval()
        model.load_state_dict(load_file(folder / "open_clip_model.safetensors"))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s": seconds, "peak_extra_mib": peak - base}


def _build(config: str, folder: Path) -> int:
    import torch

    from tests.multimodal.open_clip_reference import import_open_clip, save_open_clip

    open_clip = import_open_clip()
    cfg = json.loads((Path(open_clip.__file__).parent / "model_configs" / f"{config}.json").read_text())
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**cfg).eval()
    save_open_clip(model, {"model_cfg": cfg}, folder)
    return (folder / "open_clip_model.safetensors").stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ViT-B-32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", choices=("ours", "open_clip"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:  # a child process: one load
        print(json.dumps(_one(args.side, args.folder)))
        return 0
    from bench.common import emit, scratch_dir

    with scratch_dir("ng_bench_open_clip_") as tmp:
        size = _build(args.config, tmp / args.config)
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "open_clip": []}
        order = list(runs)
        for i in range(args.repeats):
            for side in order if i % 2 == 0 else order[::-1]:
                command = [sys.executable, __file__, "--side", side, "--folder", str(tmp / args.config)]
                out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                runs[side].append(json.loads(out.strip().splitlines()[-1]))
    emit({"config": args.config, "weights_mib": round(size / 2**20, 1), "repeats": args.repeats,
          **{side: {"min_s": round(min(r["s"] for r in rs), 3),
                    "median_s": round(statistics.median(r["s"] for r in rs), 3),
                    "peak_extra_mib": round(max(r["peak_extra_mib"] for r in rs), 1)}
             for side, rs in runs.items()}}, "cpu")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
