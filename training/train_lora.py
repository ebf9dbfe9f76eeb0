"""Stage 4: a style LoRA — the "outlined" look (a dark rim around every object and figure).

The same scenes as the base data, drawn outlined and encoded with the VAE; a peft LoRA (rank 8) on
the UNet's attention projections and resnet convolutions (and rank 4 on the text encoder's
attention, so the text side carries the style too) learns the difference with the frozen base,
captions unchanged (no trigger word: the LoRA weight is the style knob). Saved in diffusers' LoRA
format (`StableDiffusionPipeline.save_lora_weights`), which `diffusion.load_lora` reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.common import Deadline, Progress, lr_factor, make_logger, optimizer_step
from training.data import LatentSet, encode_world
from training.models import noise_scheduler, tokenize
from training.train_base import diffusion_loss, drop_captions
from training.train_control import load_base

# everything but the cross-attention's key/value projections, which read the prompt: a LoRA whose change
# does not depend on the prompt changes the conditional and unconditional predictions alike, so
# classifier-free guidance (which multiplies their difference by 6.5 at CFG 7.5) does not amplify it
TARGETS = r".*(attn1\.(to_q|to_k|to_v|to_out\.0)|attn2\.(to_q|to_out\.0)|conv1|conv2)$"
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def train_lora(run: Path, seed: int = 1, minutes: float = 8.0, steps: int = 1_000_000, batch: int = 48,
               lr: float = 5e-4, rank: int = 8, text_rank: int = 4, count: int = 4000, save_every: int = 300,
               drop: float = 0.5) -> Path:
    """Train the style LoRA for RUN/tinyworld; saves RUN/tinyworld-style/tinyworld-style.safetensors.

    The learning rate decays (cosine) to zero by the end of the budget: a LoRA stopped at a high rate
    is noisy, and its noise grows with the weight it is applied at (the style score stops rising).
    text_rank=0 leaves the text encoder alone. `drop` of the captions are emptied, as in base training:
    classifier-free guidance runs the LoRA'd UNet on the empty prompt too, and a LoRA never trained
    there makes the guided difference (and the image) noisy at full weight.
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    log = make_logger(run / "lora.log")
    out = run / "tinyworld-style"
    unet, text_encoder, tokenizer = load_base(run)
    data_path = run / "latents-outlined.pt"
    if data_path.exists():
        data = LatentSet.load(data_path)
    else:
        vae = AutoencoderKL.from_pretrained(run / "vae", local_files_only=True).eval()
        data = encode_world(vae, seed + 50, count, style="outlined")
        data.save(data_path)
    ids = tokenize(tokenizer, data.captions)
    empty = tokenize(tokenizer, [""])[0]
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=TARGETS))
    if text_rank:
        text_encoder.add_adapter(LoraConfig(r=text_rank, lora_alpha=text_rank, init_lora_weights="gaussian",
                                            target_modules=TEXT_TARGETS))
    params = [p for m in (unet, text_encoder) for n, p in m.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    unet.train()
    text_encoder.train()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    deadline = Deadline(minutes, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 50, deadline, decay=True))
    scheduler = noise_scheduler()
    gen = torch.Generator().manual_seed(seed)
    pick = np.random.default_rng(seed + 2)
    log(f"lora: {len(data.captions)} outlined latents, rank {rank}")

    def save() -> None:
        out.mkdir(parents=True, exist_ok=True)
        StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=get_peft_model_state_dict(unet),
                                                  text_encoder_lora_layers=get_peft_model_state_dict(text_encoder)
                                                  if text_rank else None,
                                                  weight_name=f"{out.name}.safetensors", safe_serialization=True)

    step = 0
    progress = Progress("lora", log, save, save_every)
    while not deadline.done(step):
        idx = torch.from_numpy(pick.integers(0, len(data.captions), size=batch))
        embeds = text_encoder(drop_captions(ids[idx], empty, pick, drop))[0]
        loss = diffusion_loss(unet, scheduler, data.latents[idx], embeds, gen)
        optimizer_step(loss, opt, params, sched)
        step += 1
        progress.after(step, float(loss.detach()))
    save()
    log(f"lora done: {step} steps")
    return out / f"{out.name}.safetensors"
