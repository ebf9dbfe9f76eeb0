"""Train the tiny demo captioner (transformers `BlipForConditionalGeneration`, as builtin:tinyblip) on
tinyworld scenes and their captions.

Teacher-forced language-model loss exactly as BLIP's forward computes it (the decoder input starts with
BLIP's [DEC] bos token, the one `generate()` starts from, and ends with [SEP], the token generation
stops at); padding is left out of the loss. Held-out combinations (world.held_out) are never trained
on; the evaluation (eval_multimodal.py) captions held-out scenes greedily and checks each attribute.

`python -m training.train_caption --run training/runs/caption --minutes 25`
Writes RUN/tinyblip (model + BlipProcessor, checkpointed as it goes) and RUN/caption.log.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import torch

from training.common import DEFAULT_RUNS, make_logger, setup_threads, train_transformers_model
from training.mm_data import EVAL_SEED, TRAIN_SEED, render, world_scenes
from training.train_clip import Pixels, Tokens

IMAGE_SIZE = 64
VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
          "image_size": IMAGE_SIZE, "patch_size": 8,
          "initializer_range": 0.02}  # BlipVisionConfig's default, 1e-10, starts a near-zero encoder


def build(seed: int = 0, extra_words: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """A fresh tiny BLIP captioner and its BlipProcessor (the tinyblip word vocabulary, 64 px images);
    `extra_words` go at the end of the vocabulary, so the captioner's token ids keep their meaning."""
    import tempfile

    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil
    from transformers import BlipProcessor

    from nodegraph_multimodal.tiny_models import SPECIALS, WORDS

    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.txt"
        vocab.write_text("\n".join([*SPECIALS, *WORDS, *extra_words]) + "\n")
        tok = BertTokenizer(str(vocab), do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    text = {"vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 64, "encoder_hidden_size": 64,
            "bos_token_id": tok.convert_tokens_to_ids("[DEC]"), "sep_token_id": tok.sep_token_id,
            "eos_token_id": tok.sep_token_id, "pad_token_id": tok.pad_token_id}
    config = BlipConfig(text_config=text, vision_config=VISION, projection_dim=32)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    images = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return model, BlipProcessor(image_processor=images, tokenizer=tok)


def lm_loss(model: Any, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BLIP's captioning loss on [DEC] caption [SEP] (padding ignored)."""
    ids = ids.clone()
    ids[:, 0] = model.config.text_config.bos_token_id
    labels = ids.masked_fill(mask == 0, -100)
    return model(pixel_values=pixels, input_ids=ids, attention_mask=mask, labels=labels).loss


@torch.no_grad()
def greedy(model: Any, pixels: torch.Tensor, tokenizer: Any, max_new_tokens: int = 30) -> list[str]:
    """Greedy captions, as caption.generate calls generate() (batched here)."""
    model.eval()
    out = model.generate(pixel_values=pixels, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
    model.train()
    return [tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]


def main(argv: list[str] | None = None) -> int:
    from training.eval_multimodal import caption_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=DEFAULT_RUNS / "caption")
    p.add_argument("--minutes", type=float, default=25.0)
    p.add_argument("--steps", type=int, default=100000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pool", type=int, default=20000, help="training scenes (non-held-out, world seed 1)")
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, help="continue from this saved folder (a new cosine cycle)")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    log = make_logger(args.run / "caption.log")
    model, processor = build(args.seed)
    if args.init is not None:
        from transformers import BlipForConditionalGeneration

        model = BlipForConditionalGeneration.from_pretrained(args.init, local_files_only=True)
    log(f"BlipForConditionalGeneration {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M params; "
        f"{vars(args)}")
    scenes, _ = world_scenes(TRAIN_SEED, args.pool, held=False)
    images = render(scenes)
    pixels_of, tokens = Pixels(processor), Tokens(processor.tokenizer)
    log(f"pool of {len(scenes)} scenes drawn; processor check max abs {pixels_of.check(images[:8]):.2e}")
    eval_scenes, _ = world_scenes(EVAL_SEED, 100, held=True)
    eval_pixels = pixels_of(render(eval_scenes))
    out = args.run / "tinyblip"

    def save() -> None:
        model.save_pretrained(out)
        processor.save_pretrained(out)

    def batch_loss(rng: random.Random) -> torch.Tensor:
        batch = rng.sample(range(len(scenes)), args.batch)
        ids, mask = tokens([scenes[i].caption for i in batch])
        return lm_loss(model, pixels_of(images[batch]), ids, mask)

    def check() -> dict[str, dict[str, float]]:
        return caption_table(greedy(model, eval_pixels, processor.tokenizer), eval_scenes)

    step = train_transformers_model(model, save, log, "caption", batch_loss, check, lr=args.lr,
                                    minutes=args.minutes, steps=args.steps, save_every=args.save_every,
                                    seed=args.seed)
    log(f"done: {step} steps, saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
