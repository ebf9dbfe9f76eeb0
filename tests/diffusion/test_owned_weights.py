"""Loaded weights own their memory: aligned, not a view of the weights file, unchanged by later edits.

`owned.read_safetensors` reads each tensor into a fresh allocation (no memory map, no clone after);
`own_storage` copies only what still views a file. These tests check the guarantee on every loading
path of the built-in model (diffusers folder and single file) and that the check itself can fail.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from nodegraph_diffusion.loading import load_text_encoder, load_unet, load_vae, make_source
from nodegraph_diffusion.owned import (
    WeightsFileError,
    _file_ranges,
    aliases_file,
    own_storage,
    read_safetensors,
)
from safetensors.torch import load_file, save_file


def views_of_files(module: Any) -> list[str]:
    ranges = _file_ranges()
    named = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, t in named if t.numel() and aliases_file(t, ranges)]


@pytest.mark.parametrize("fmt", ["folder", "single_file"])
def test_every_loaded_tensor_owns_aligned_memory(ctx: Any, tiny_dir: Path, tiny_single_file: Path,
                                                 fmt: str) -> None:
    source = make_source(tiny_dir if fmt == "folder" else tiny_single_file, ctx)
    for load in (load_unet, load_vae, load_text_encoder):
        model = load(source, ctx)
        assert views_of_files(model) == [], load.__name__


def test_the_check_sees_mapped_tensors_and_own_storage_fixes_them(tiny_dir: Path) -> None:
    state = load_file(str(tiny_dir / "unet" / "diffusion_pytorch_model.safetensors"))  # memory-mapped
    module = torch.nn.Module()
    for i, tensor in enumerate(list(state.values())[:8]):
        module.register_buffer(f"b{i}", tensor)
    assert views_of_files(module), "safetensors' mapped tensors should count as views of the file"
    before = {n: t.clone() for n, t in module.named_buffers()}
    own_storage(module)
    assert views_of_files(module) == []
    assert all(torch.equal(before[n], t) for n, t in module.named_buffers())


def test_file_edited_after_loading_leaves_the_model_alone(ctx: Any, tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_dir, folder)
    unet = load_unet(make_source(folder, ctx), ctx)
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    with open(weights, "r+b") as file:  # in place, same inode: a mapped view would see this
        header = 8 + int.from_bytes(file.read(8), "little")
        file.seek(header)
        file.write(b"\x00" * (weights.stat().st_size - header))
    assert all(torch.equal(before[n], p) for n, p in unet.named_parameters())


def test_read_safetensors_equals_safetensors(tmp_path: Path) -> None:
    tensors = {
        "f32": torch.randn(3, 5), "f16": torch.randn(7).half(), "bf16": torch.randn(2, 2).bfloat16(),
        "i64": torch.arange(5), "u8": torch.tensor([1, 2, 3], dtype=torch.uint8),
        "flag": torch.tensor([True, False]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    ours, theirs = read_safetensors(path), load_file(str(path))
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape, name
        assert torch.equal(ours[name], tensor), name
        assert not ours[name].numel() or ours[name].data_ptr() % 64 == 0, name


def test_truncated_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.randn(64)}, str(path))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(WeightsFileError, match="truncated"):
        read_safetensors(path)


def test_control_models_own_their_memory_too() -> None:
    from diffusers import ControlNetModel
    from nodegraph_control.models import ControlNetHandle, load_control_model
    from nodegraph_diffusion.paths import BUILTIN_DIR

    folder = BUILTIN_DIR / "tinyworld-pose"
    ours = load_control_model(ControlNetHandle(str(folder), "fp", "diffusers"), None, "controlnet")
    assert views_of_files(ours) == []
    theirs = ControlNetModel.from_pretrained(folder, local_files_only=True)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in theirs.state_dict().items())
