"""Prompts over 75 tokens against a shorter negative (issue 16): pad the shorter with empty-prompt chunks.

The graph's image must equal StableDiffusionPipeline's given `prompt_embeds`/`negative_prompt_embeds`
padded A1111's way, where the empty-prompt chunk comes from the pipeline's own `encode_prompt("")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from nodegraph_diffusion.cond_padding import PaddingError, match_lengths, pad_with_empty
from nodegraph_diffusion.sampler_nodes import guidance_embeds
from nodegraph_diffusion.types import Conditioning

from nodegraph.api import InputError
from nodegraph.runtime.context import RunOptions
from nodegraph.runtime.engine import Engine

GRAPH = Path(__file__).parents[2] / "graphs" / "txt2img.yaml"
LONG = "a big red circle in the center, blue background, " * 15  # 165 tiny-tokenizer tokens: 3 chunks
STEPS, CFG = 4, 3.0


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(cache_mb=256)


def run(engine: Engine, tmp_path: Path, **params: Any) -> Any:
    params = {"steps": STEPS, "scheduler": "pndm", "cfg": CFG, **params}  # pndm: the model's own scheduler
    options = RunOptions(out_dir=tmp_path / "out", device="cpu", dtype="float32", show_progress=False)
    return engine.run(GRAPH, params, options=options)


def empty_chunk(pipe: Any) -> torch.Tensor:
    """The encoded empty prompt, independently: the pipeline's own encode_prompt."""
    with torch.no_grad():
        return pipe.encode_prompt("", "cpu", 1, False)[0]


def pipeline_image(pipe: Any, pos: torch.Tensor, neg: torch.Tensor, seed: int,
                   batch: int = 1) -> torch.Tensor:
    return pipe(prompt_embeds=pos, negative_prompt_embeds=neg, num_inference_steps=STEPS, guidance_scale=CFG,
                height=64, width=64, num_images_per_prompt=batch,
                generator=torch.Generator().manual_seed(seed), output_type="pt").images


def test_long_positive_empty_negative_equals_pipeline(engine: Engine, tmp_path: Path, tiny_pipe: Any) -> None:
    result = run(engine, tmp_path, prompt=LONG, negative="", seed=7, batch=2)
    pos = result.outputs["positive"]["out"].embeds
    assert pos.shape == (1, 231, 32)
    empty = empty_chunk(tiny_pipe)
    assert torch.equal(result.outputs["negative"]["out"].embeds, empty)
    theirs = pipeline_image(tiny_pipe, pos, empty.repeat(1, 3, 1), seed=7, batch=2)
    ours = result.outputs["image"]["out"].pixels
    assert ours.shape == theirs.shape == (2, 3, 64, 64)
    assert (ours - theirs).abs().max().item() == 0.0
    assert (ours[0] - ours[1]).abs().max().item() > 0  # each image its own noise


def test_short_positive_long_negative_equals_pipeline(engine: Engine, tmp_path: Path, tiny_pipe: Any) -> None:
    prompt = "a big red circle in the center, blue background"
    result = run(engine, tmp_path, prompt=prompt, negative=LONG, seed=3)
    neg = result.outputs["negative"]["out"].embeds
    assert neg.shape == (1, 231, 32)
    pos = tiny_pipe.encode_prompt(prompt, "cpu", 1, False)[0].detach()
    padded = torch.cat([pos, empty_chunk(tiny_pipe).repeat(1, 2, 1)], dim=1)  # positive's tokens stay first
    theirs = pipeline_image(tiny_pipe, padded, neg, seed=3)
    assert (result.outputs["image"]["out"].pixels - theirs).abs().max().item() == 0.0


def test_padding_with_empty_chunks_keeps_the_empty_uncond(tiny_pipe: Any) -> None:
    """Padding an empty negative repeats its keys/values: the UNet's output equals the unpadded one
    within fp32 rounding (measured: max abs difference 4.8e-7 on outputs up to 3.9), i.e. A1111's
    separate-call result."""
    empty = empty_chunk(tiny_pipe)
    x = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = tiny_pipe.unet(x, 500, encoder_hidden_states=empty).sample
        padded = tiny_pipe.unet(x, 500, encoder_hidden_states=empty.repeat(1, 3, 1)).sample
    diff = (plain - padded).abs().max().item()
    assert diff < 1e-5
    other = torch.randn(empty.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        changed = tiny_pipe.unet(x, 500, encoder_hidden_states=torch.cat([empty, other, other], 1)).sample
    assert (plain - changed).abs().max().item() > 100 * max(diff, 1e-7)  # the test can tell a wrong pad


def test_match_lengths_pads_the_shorter_side_at_the_end() -> None:
    g = torch.Generator().manual_seed(0)
    pos, neg, empty = (torch.randn(s, generator=g) for s in ((2, 77, 4), (1, 154, 4), (1, 77, 4)))
    p, n = match_lengths(pos, neg, None, empty)  # the short positive (batch 2) borrows the negative's empty
    assert n is neg and p.shape == (2, 154, 4)
    assert torch.equal(p[:, :77], pos)
    assert torch.equal(p[0, 77:], empty[0]) and torch.equal(p[1, 77:], empty[0])
    p2, n2 = match_lengths(neg, pos[:1], empty, None)
    assert p2 is neg and torch.equal(n2, torch.cat([pos[:1], empty], 1))
    same = match_lengths(pos, pos)
    assert same[0] is pos and same[1] is pos


def test_padding_errors_are_clear() -> None:
    a, b = torch.zeros(1, 77, 4), torch.zeros(1, 154, 4)
    with pytest.raises(PaddingError, match="neither carries"):
        match_lengths(a, b)
    with pytest.raises(PaddingError, match="77-token chunks"):
        pad_with_empty(torch.zeros(1, 100, 4), 154, torch.zeros(1, 77, 4))
    with pytest.raises(PaddingError, match="different text encoders"):
        pad_with_empty(a, 154, torch.zeros(1, 77, 8))
    with pytest.raises(InputError, match="154 tokens"):
        guidance_embeds(Conditioning(b), Conditioning(a), cfg=7.5)
    pos, neg = guidance_embeds(Conditioning(b), Conditioning(a), cfg=1.0)  # no CFG: nothing to pad
    assert pos is not None and neg.shape == (1, 77, 4)
