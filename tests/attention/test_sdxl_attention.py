"""Attention capture and prompt-to-prompt on the SDXL UNet (builtin:tinyxl), through the sampler node.

SDXL's UNet differs from SD1.5's where the hooks sit: transformer blocks of depth > 1 (tinyxl: 2, as
SDXL's 2 and 10), the cross-attention states are the two encoders' penultimate states side by side
(the tokens are those of one CLIP BPE, so words align as on SD1.5), and the UNet takes
`added_cond_kwargs` (pooled embeds, size ids) that the [source, edited] pair must carry for both.
The reference maps come from diffusers' own `AttnProcessor`, run inside StableDiffusionXLPipeline on
each cross-attention call's very inputs (its output is dropped; the layer's output stays the default
processor's, so the pipeline's trajectory is the plain one).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from nodegraph_diffusion.model_nodes import load_model
from nodegraph_diffusion.paths import BUILTIN_DIR, ModelRef
from nodegraph_diffusion.sampler_nodes import sample
from nodegraph_diffusion.text_nodes import encode_text
from nodegraph_diffusion.types import Latents

from nodegraph_attention.nodes import prompt_to_prompt
from nodegraph_attention.p2p import make_edit, pair_conditioning
from nodegraph_attention.types import AttentionCapture

TINYXL = BUILTIN_DIR / "tinyxl"
SOURCE = "a big red circle in the center, blue background"
STEPS = 3


class RecordingProcessor:
    """The default processor's output; diffusers' `AttnProcessor` computes the probabilities."""

    def __init__(self, inner: Any, name: str, store: list[tuple[str, torch.Tensor]]) -> None:
        from diffusers.models.attention_processor import AttnProcessor

        self.inner, self.name, self.store, self.classic = inner, name, store, AttnProcessor()

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, **kwargs: Any) -> torch.Tensor:
        scores = attn.get_attention_scores
        seen: list[torch.Tensor] = []
        attn.get_attention_scores = lambda *a, **k: seen.append(scores(*a, **k)) or seen[-1]
        try:
            self.classic(attn, hidden_states, encoder_hidden_states, attention_mask)
        finally:
            del attn.get_attention_scores
        self.store.append((self.name, seen[0]))
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)


def pipeline() -> Any:
    from diffusers import StableDiffusionXLPipeline
    from nodegraph_diffusion.loading import own_storage

    pipe = StableDiffusionXLPipeline.from_pretrained(TINYXL, local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2):
        own_storage(part)
    return pipe


def run(ctx: Any, model: Any, positive: Any, negative: Any, conditions: list[Any], seed: int = 4) -> Latents:
    batch = positive.embeds.shape[0]
    return sample(ctx, model.unet, model.scheduler, positive, Latents(torch.zeros(batch, 4, 8, 8)),
                  negative=negative, seed=seed, steps=STEPS, cfg=5.0, conditions=conditions)


@pytest.fixture
def model(ctx: Any) -> Any:
    return load_model(ctx, ModelRef("builtin:tinyxl"))


def test_captured_maps_equal_diffusers_attention_probabilities(ctx: Any, model: Any) -> None:
    positive = encode_text(ctx, model.text_encoder, SOURCE)
    negative = encode_text(ctx, model.text_encoder, "")
    ours = run(ctx, model, positive, negative, [AttentionCapture(key="maps")])
    maps = ours.extras["maps"]

    pipe = pipeline()
    store: list[tuple[str, torch.Tensor]] = []
    pipe.unet.set_attn_processor({name: RecordingProcessor(proc, name, store) if "attn2" in name else proc
                                  for name, proc in pipe.unet.attn_processors.items()})
    latents = pipe(SOURCE, negative_prompt="", height=64, width=64, num_inference_steps=STEPS,
                   guidance_scale=5.0, output_type="latent", generator=torch.Generator().manual_seed(4)).images
    assert torch.equal(ours.samples, latents)  # the capture is read-only: the pipeline's own latents

    cross_layers = [n for n in pipe.unet.attn_processors if "attn2" in n]
    assert len(cross_layers) == 8  # tinyxl: depth-2 transformer blocks in down, mid and two up attentions
    assert len(store) == len(cross_layers) * STEPS and maps.layers == len(store)
    heads_total = 0.0
    for _, probs in store:  # (2 * heads, 16 queries, 77 tokens): [negative, positive] x heads
        heads = probs.shape[0] // 2
        cond = probs[heads:].reshape(1, heads, *probs.shape[1:]).float().mean(dim=1)
        heads_total = heads_total + cond.transpose(1, 2).reshape(1, 77, 4, 4)
    expected = heads_total / len(store)
    assert maps.maps.shape == (1, 77, 4, 4)
    assert float((maps.maps - expected).abs().max()) == 0.0


def test_identity_p2p_on_sdxl_is_exact_and_an_edit_acts(ctx: Any, model: Any) -> None:
    source = encode_text(ctx, model.text_encoder, SOURCE)
    negative = encode_text(ctx, model.text_encoder, "")
    plain = run(ctx, model, source, negative, [])
    same = prompt_to_prompt(ctx, model.text_encoder, source, source, cross_replace=0.0, self_replace=0.0)
    reference = run(ctx, model, same.positive, negative, [same.edit])  # hooks never fire: same noise only
    assert torch.equal(reference.samples[0], reference.samples[1])
    assert torch.allclose(reference.samples[0], plain.samples[0], atol=1e-4)  # batch 4 vs 2 on CPU
    identity = prompt_to_prompt(ctx, model.text_encoder, source, source, mode="refine", cross_replace=1.0,
                                self_replace=1.0, local_blend=["circle"])
    assert torch.equal(run(ctx, model, identity.positive, negative, [identity.edit]).samples, reference.samples)

    edited = encode_text(ctx, model.text_encoder, "a big red square in the center, blue background")
    untouched = prompt_to_prompt(ctx, model.text_encoder, source, edited, cross_replace=0.0, self_replace=0.0)
    unedited = run(ctx, model, untouched.positive, negative, [untouched.edit])
    # the random tiny model barely listens to its prompt (a word swap moves latents ~1e-6): a re-weight
    # on top makes the edit's effect measurable (~1e-3)
    swap = prompt_to_prompt(ctx, model.text_encoder, source, edited, mode="replace", reweight={"red": 10.0})
    out = run(ctx, model, swap.positive, negative, [swap.edit, AttentionCapture()])
    assert torch.equal(out.samples[0], unedited.samples[0])  # the source renders untouched
    assert not torch.allclose(out.samples[1], unedited.samples[1], atol=1e-4)  # the injection acts
    assert out.extras["attention_maps"].maps.shape == (2, 77, 4, 4)


def test_p2p_replace_on_sdxl_equals_the_edit_applied_by_hand(ctx: Any, model: Any) -> None:
    """Word swap at every step and layer (cross_replace 1, no self replacement), "red" re-weighted x10
    (else the random tiny model's edit is below float noise): the edited branch's cross-attention
    probabilities are the source's, moved by the word-swap matrix and scaled by the equalizer; checked
    against the same edit done by a hand-written processor in the pipeline (same pair, same noise)."""
    from diffusers.models.attention_processor import AttnProcessor

    source = encode_text(ctx, model.text_encoder, SOURCE)
    edited = encode_text(ctx, model.text_encoder, "a big red square in the center, blue background")
    negative = encode_text(ctx, model.text_encoder, "")
    with torch.no_grad():
        pipe = pipeline()
    edit = make_edit(pipe.tokenizer, source, edited, "replace", cross_replace=1.0, self_replace=0.0,
                     reweight={"red": 10.0})
    plain = run(ctx, model, pair_conditioning(source, edited), negative,
                [make_edit(pipe.tokenizer, source, edited, "replace", cross_replace=0.0, self_replace=0.0)])
    ours = run(ctx, model, pair_conditioning(source, edited), negative, [edit])

    class Swap(AttnProcessor):
        """diffusers' AttnProcessor with the edited prompt's probabilities replaced by the source's."""

        def __call__(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any = None,
                      attention_mask: Any = None, **kwargs: Any) -> Any:
            scores = attn.get_attention_scores

            def swapped(*a: Any, **k: Any) -> torch.Tensor:
                probs = scores(*a, **k)
                heads = attn.heads
                src = probs[2 * heads:3 * heads]  # batch [neg, neg, source, edited] x heads
                out = probs.clone()
                mapped = torch.einsum("hpw,wn->hpn", src, edit.mapper.to(probs.dtype))
                out[3 * heads:] = mapped * edit.equalizer.to(probs.dtype)
                return out

            attn.get_attention_scores = swapped
            try:
                return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask)
            finally:
                del attn.get_attention_scores

    pipe.unet.set_attn_processor({name: Swap() if "attn2" in name else proc
                                  for name, proc in pipe.unet.attn_processors.items()})
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(4))
    theirs = pipe(prompt_embeds=edit.pair_embeds, pooled_prompt_embeds=torch.cat([source.pooled, edited.pooled]),
                  negative_prompt_embeds=negative.embeds.repeat(2, 1, 1),
                  negative_pooled_prompt_embeds=negative.pooled.repeat(2, 1), latents=noise.repeat(2, 1, 1, 1),
                  height=64, width=64, num_inference_steps=STEPS, guidance_scale=5.0, output_type="latent",
                  generator=torch.Generator().manual_seed(4)).images
    # the delta route (processors.py) and the direct route differ only in float summation order
    assert float((ours.samples - theirs).abs().max()) < 1e-5
    assert float((ours.samples[1] - plain.samples[1]).abs().max()) > 5e-4  # the edit is 50x the bound


def test_the_refiner_aligns_words_with_its_only_tokenizer(ctx: Any) -> None:
    """The refiner has no first encoder: the attention nodes take the family's tokenizer (tokenizer_2)."""
    from nodegraph_attention.nodes import maps_to_images

    refiner = load_model(ctx, ModelRef("builtin:tinyxl-refiner"))
    source = encode_text(ctx, refiner.text_encoder, SOURCE)
    edited = encode_text(ctx, refiner.text_encoder, "a big red square in the center, blue background")
    negative = encode_text(ctx, refiner.text_encoder, "")
    pair = prompt_to_prompt(ctx, refiner.text_encoder, source, edited, mode="replace")
    assert torch.equal(pair.edit.mapper, torch.eye(77))  # one token each: the swap keeps positions
    capture = AttentionCapture()
    out = run(ctx, refiner, pair.positive, negative, [pair.edit, capture])
    images = maps_to_images(ctx, out, capture, refiner.text_encoder, source, words=["circle", "blue"])
    assert images.pixels.shape == (2, 3, 64, 64) and images.labels == ("circle", "blue")
