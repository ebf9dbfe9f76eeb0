"""Fixtures of the multimodal tests: tiny random CLIP / BLIP folders built in-process (session scope,
in tmp dirs), a two-image batch file, and a helper to run graph dicts on the CPU in fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodegraph_multimodal.tiny_models import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tinyclip", seed=3)


@pytest.fixture(scope="session")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodegraph_multimodal.tiny_models import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.mktemp("blip") / "tinyblip", "caption", seed=4)


@pytest.fixture(scope="session")
def vqa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodegraph_multimodal.tiny_models import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.mktemp("vqa") / "tinyblip-vqa", "vqa", seed=5)


@pytest.fixture(scope="session")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three 40x48 PNGs of random noise (different seeds), not square, so resizing is exercised."""
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for seed in range(3):
        pixels = np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8)
        path = folder / f"p{seed}.png"
        PILImage.fromarray(pixels, "RGB").save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def git_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodegraph_multimodal.tiny_models import build_tiny_git

    # seed 3: greedy and 2-beam captions differ on the test pictures, so a lost `num_beams` would show
    return build_tiny_git(tmp_path_factory.mktemp("git") / "tinygit", seed=3)


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodegraph_multimodal.tiny_vlm import build_tiny_llava

    # seed 5: greedy and 3-beam replies differ, and so do the replies to different questions
    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "tinyllava", seed=5)


@pytest.fixture(scope="session")
def idefics3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodegraph_multimodal.tiny_vlm import build_tiny_idefics3

    # seed 0: as for llava_dir, greedy and beams differ, and so do the replies to different questions
    return build_tiny_idefics3(tmp_path_factory.mktemp("idefics3") / "tinyidefics3", seed=0)


@pytest.fixture(scope="session")
def paligemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodegraph_multimodal.tiny_vlm import build_tiny_paligemma

    # seed 2: greedy and 3-beam captions differ, and so do the greedy answers to different questions
    return build_tiny_paligemma(tmp_path_factory.mktemp("paligemma") / "tinypaligemma", seed=2)


@pytest.fixture(scope="session")
def florence2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodegraph_multimodal.tiny_vlm import build_tiny_florence2

    # seed 0: greedy and 3-beam captions differ, and so do the greedy answers to different questions
    return build_tiny_florence2(tmp_path_factory.mktemp("florence2") / "tinyflorence2", seed=0)
