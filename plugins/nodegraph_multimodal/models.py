"""Finding and loading the pack's transformers models and their processors, under the run's residency.

A folder is checked before any weights load (a CLIP folder saved without its processor is an error
naming the folder, not a transformers traceback), and read with `local_files_only=True`, so nothing is
ever fetched. Models are pinned on the run's device while a node uses them; processors stay on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nodegraph.api import InputError, NodeContext

IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer_config.json")


def check_model_folder(folder: Path, what: str, example: str) -> None:
    """Raise InputError (field `path`) unless `folder` holds a transformers model and its processor."""
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise InputError(f"'{folder}' is not a transformers {what} folder (no config.json); give the folder "
                         f"`{example}.save_pretrained(folder)` wrote", field="path")
    needed = (("an image processor (preprocessor_config.json)", IMAGE_PROCESSOR_FILES),
              ("a tokenizer (tokenizer.json / vocab files)", TOKENIZER_FILES))
    missing = [kind for kind, names in needed if not any((folder / n).is_file() for n in names)]
    if missing:
        raise InputError(f"'{folder}' has no processor: it lacks {' and '.join(missing)}; save the model's "
                         f"processor into the same folder (processor.save_pretrained(folder))", field="path")


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json (checked to exist by `check_model_folder`)."""
    import json

    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read '{folder / 'config.json'}': {exc}", field="path") from exc
    return data if isinstance(data, dict) else {}


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers without its own progress bars for the block (the run shows progress)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load(loader: Any, folder: str, what: str, field: str) -> Any:
    """`loader.from_pretrained(folder)` offline, without transformers' own bar.

    ImportError too is the folder's problem to report: a processor may need a library this environment
    lacks (Qwen2-VL's video processor needs torchvision), which the message names."""
    with quiet_transformers():
        try:
            return loader.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
            raise InputError(f"cannot load the {what} in '{folder}': {exc}", field=field) from exc


@contextmanager
def use_model(ctx: NodeContext, path: str, fingerprint: str, model_cls: str, field: str = "model",
              ) -> Iterator[tuple[Any, Any]]:
    """(processor, model) of a transformers folder: `model_cls` (a transformers class name) in eval mode
    on the run's device and dtype, pinned for the block; the processor once per run context."""
    import transformers

    cls = getattr(transformers, model_cls)

    def load_model() -> Any:
        return _load(cls, path, model_cls, field).eval()

    def load_processor() -> Any:
        return _load(transformers.AutoProcessor, path, "processor", field)

    with ctx.resources.use(f"{fingerprint}:processor", load_processor) as processor, \
            ctx.resources.use(f"{fingerprint}:{model_cls}", load_model, device=ctx.device,
                              dtype=ctx.dtype) as model:
        yield processor, model


def to_pil(image: Any) -> list[Any]:
    """An `Image` batch as PIL RGB images, quantised to 8 bits as `core.save_image` writes them (what a
    user's processor reads from a PNG)."""
    import torch
    from PIL import Image as PILImage

    pixels = image.pixels.detach().to("cpu").float().clamp(0, 1)
    arrays = (pixels.permute(0, 2, 3, 1) * 255).round().to(dtype=torch.uint8).numpy()
    return [PILImage.fromarray(a, "RGB") for a in arrays]
