"""Helpers of the multimodal tests: run graph dicts on the CPU in fp32, batch picture files, and what
transformers itself gives for a vision-language chat folder (the reference of the vision-language tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image as PILImage


def run_graph(nodes: dict[str, Any], out: Path, **options: Any) -> Any:
    from nodegraph import Engine, RunOptions

    opts = RunOptions(out_dir=out, device="cpu", dtype="float32", show_progress=False, **options)
    return Engine().run({"version": 1, "nodes": nodes}, options=opts)


def batch_nodes(pictures: list[Path]) -> dict[str, Any]:
    """Nodes loading the pictures and batching them as `@batch`."""
    nodes: dict[str, Any] = {f"p{i}": {"type": "core.load_image", "path": str(p)}
                             for i, p in enumerate(pictures)}
    nodes["batch"] = {"type": "core.image_batch", "images": [f"@p{i}" for i in range(len(pictures))]}
    return nodes


def pil_images(pictures: list[Path]) -> list[Any]:
    """The pictures as the library's users read them."""
    return [PILImage.open(p).convert("RGB") for p in pictures]


def vlm_inputs(folder: Path, picture: Path, text: str) -> tuple[Any, Any]:
    """(processor, inputs) the way transformers' LLaVA docs build them: the chat template renders the
    prompt string, then the processor tokenises it with the image (not the node's one-call route)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor, processor(images=pil_images([picture])[0], text=prompt, return_tensors="pt")


def vlm_reference(folder: Path, picture: Path, text: str, cls: str = "LlavaForConditionalGeneration",
                  **settings: Any) -> str:
    """`cls`.generate() (a transformers class) on the documented inputs, the reply decoded."""
    import transformers

    processor, inputs = vlm_inputs(folder, picture, text)
    model = getattr(transformers, cls).from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, **settings)
    n = inputs["input_ids"].shape[1]
    return processor.decode(out[0, n:], skip_special_tokens=True).strip()


def plain_reference(folder: Path, picture: Path, prompt: str, cls: str, **settings: Any) -> tuple[str, Any]:
    """(reply, input ids) as PaliGemma's and Florence-2's docs prompt them: `processor(text=prompt,
    images=image)`, `generate()`, decode of the ids after the prompt (PaliGemma, decoder-only) or of all
    of them (Florence-2, encoder-decoder: `batch_decode(generated_ids)`)."""
    import transformers

    processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    inputs = processor(text=prompt, images=pil_images([picture])[0], return_tensors="pt")
    model = getattr(transformers, cls).from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, **settings)
    n = 0 if model.config.is_encoder_decoder else inputs["input_ids"].shape[1]
    return processor.decode(out[0, n:], skip_special_tokens=True).strip(), inputs["input_ids"]


def broken_vlm_folder(folder: Path, into: Path, drop: str) -> Path:
    """A copy of a VLM folder missing one part: `drop` a file name (chat_template.jinja), or
    "image_processor" to take the image processor out of processor_config.json."""
    import json
    import shutil

    shutil.copytree(folder, into)
    if drop == "image_processor":
        config = json.loads((into / "processor_config.json").read_text())
        del config["image_processor"]
        (into / "processor_config.json").write_text(json.dumps(config))
    else:
        (into / drop).unlink()
    return into
