"""Engine overhead of a vision-language caption: `caption.generate` on a chat VLM vs transformers direct.

The same tiny random VLM (built in a temp folder: LLaVA or Idefics3 architecture, `--arch`), the same
picture (graphs/inputs/scene_64.png) and settings (greedy or `--beams`, `--max-new-tokens`). The engine
side is `Engine.run` of a three-node graph (load_image, caption.load, caption.generate) without its
result cache (`cache_mb=0`), so every node runs every time while the model stays resident; the direct
side is what a transformers user writes: `apply_chat_template(..., tokenize=True, return_dict=True)`,
`generate()`, decode of the new tokens, on a model and processor loaded once. Runs alternate, after a
warm-up. Prints one JSON object: min and median seconds of each side, their ratio, and whether the two
texts are equal.

    python bench/vlm_caption.py [--arch llava|idefics3] [--repeats 5] [--max-new-tokens 20] [--beams 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import emit, scratch_dir, timed  # noqa: E402

PICTURE = ROOT / "graphs" / "inputs" / "scene_64.png"
CLASSES = {"llava": "LlavaForConditionalGeneration", "idefics3": "Idefics3ForConditionalGeneration"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(CLASSES), default="llava")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--beams", type=int, default=1)
    args = parser.parse_args(argv)
    with scratch_dir("ng_bench_vlm_") as tmp:
        return bench(tmp, args)


def bench(tmp: Path, args: argparse.Namespace) -> int:
    import transformers
    from nodegraph_multimodal import tiny_vlm
    from nodegraph_multimodal.vlm import DEFAULT_PROMPT
    from PIL import Image as PILImage

    from nodegraph import Engine, RunOptions

    folder = getattr(tiny_vlm, f"build_tiny_{args.arch}")(tmp / args.arch, seed=0)
    processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = getattr(transformers, CLASSES[args.arch]).from_pretrained(folder, local_files_only=True).eval()
    picture = PILImage.open(PICTURE).convert("RGB")
    settings = {"max_new_tokens": args.max_new_tokens, "num_beams": args.beams, "do_sample": False}
    engine = Engine(cache_mb=0)  # no result cache: every node runs every time; the model stays resident
    options = RunOptions(out_dir=tmp / "out", device="cpu", dtype="float32", show_progress=False)
    graph = {"version": 1, "nodes": {
        "img": {"type": "core.load_image", "path": str(PICTURE)},
        "vlm": {"type": "caption.load", "path": str(folder)},
        "cap": {"type": "caption.generate", "model": "@vlm", "image": "@img", "prompt": DEFAULT_PROMPT,
                "max_new_tokens": args.max_new_tokens, "num_beams": args.beams}}}
    texts: dict[str, str] = {}

    def run_engine() -> None:
        texts["engine"] = engine.run(graph, options=options).outputs["cap"]["out"]

    def run_direct() -> None:
        messages = [{"role": "user", "content": [{"type": "image", "image": picture},
                                                 {"type": "text", "text": DEFAULT_PROMPT}]}]
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, **settings)
        reply = out[0, inputs["input_ids"].shape[1]:]
        texts["direct"] = processor.decode(reply, skip_special_tokens=True).strip()

    run_engine(), run_direct()  # warm-up: loads, allocator
    times: dict[str, list[float]] = {"engine": [], "direct": []}
    for i in range(args.repeats):
        order = [("engine", run_engine), ("direct", run_direct)]
        for name, fn in order[i % 2:] + order[:i % 2]:  # alternate which side goes first
            times[name].append(timed("cpu", fn))
    medians = {k: statistics.median(v) for k, v in times.items()}
    emit({"bench": "vlm_caption", "arch": args.arch, "transformers": transformers.__version__,
          "max_new_tokens": args.max_new_tokens, "beams": args.beams, "repeats": args.repeats,
          "engine_s": {"min": round(min(times["engine"]), 4), "median": round(medians["engine"], 4)},
          "direct_s": {"min": round(min(times["direct"]), 4), "median": round(medians["direct"], 4)},
          "ratio_median": round(medians["engine"] / medians["direct"], 3),
          "same_text": texts["engine"] == texts["direct"], "text": texts["engine"]}, "cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
