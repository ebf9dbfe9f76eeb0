"""`python -m training.train STAGE [options]`: run one training stage (or `all`) into a run folder.

Stages, in order (each reads what the earlier ones wrote in the same `--run` folder):
  vae      the AutoencoderKL                                  -> RUN/vae
  encode   pre-encode world scenes with that VAE              -> RUN/latents.pt
  decoder  sharpen the VAE decoder on those latents (encoder and latent space unchanged) -> RUN/vae
  base     UNet + CLIP text encoder on the latents            -> RUN/tinyworld (diffusers pipeline folder)
  pose     pose ControlNet (from the UNet's encoder)          -> RUN/tinyworld-pose
  edge     edge (Canny) ControlNet                            -> RUN/tinyworld-edge
  lora     style LoRA ("outlined" look)                       -> RUN/tinyworld-style
  ship     copy the trained family into the built-in folder, fp16 (see ship.py)
Every stage checkpoints as it goes, so an interrupted run still leaves usable weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.common import DEFAULT_RUNS, setup_threads

STAGES = ("vae", "encode", "decoder", "base", "pose", "edge", "lora", "ship")
# minutes per stage of the recorded CPU run (README); --minutes overrides
MINUTES = {"vae": 14.0, "decoder": 12.0, "base": 30.0, "pose": 14.0, "edge": 5.0, "lora": 4.0}


def parse(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=(*STAGES, "all"))
    p.add_argument("--run", type=Path, default=DEFAULT_RUNS / "cpu", help="run folder (outputs, logs)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--minutes", type=float, default=None, help="time budget of the stage")
    p.add_argument("--steps", type=int, default=1_000_000, help="step budget of the stage")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the stage's)")
    p.add_argument("--resume", action="store_true",
                   help="base/pose/edge: continue from the run's saved weights, learning rate decaying to 0")
    p.add_argument("--count", type=int, default=16000, help="scenes to pre-encode (encode stage)")
    p.add_argument("--builtin", type=Path, default=None, help="ship: target folder (default: the real one)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="ship: stored dtype")
    return p.parse_args(argv)


def run_stage(stage: str, args: argparse.Namespace) -> None:
    """Dispatch one stage (imports lazily: each stage pulls in only what it needs)."""
    run: Path = args.run
    run.mkdir(parents=True, exist_ok=True)
    minutes = args.minutes or MINUTES.get(stage, 0.0)
    if stage == "vae":
        from training.train_vae import train_vae

        train_vae(run, seed=args.seed, minutes=minutes, steps=args.steps)
    elif stage == "decoder":
        from training.train_vae import train_decoder

        train_decoder(run, seed=args.seed, minutes=minutes, steps=args.steps)
    elif stage == "encode":
        from training.train_base import encode_stage

        encode_stage(run, seed=args.seed, count=args.count)
    elif stage == "base":
        from training.train_base import train_base

        train_base(run, seed=args.seed, minutes=minutes, steps=args.steps, resume=args.resume,
                   **({"lr": args.lr} if args.lr else {}))
    elif stage in ("pose", "edge"):
        from training.train_control import train_controlnet

        train_controlnet(run, kind=stage, seed=args.seed, minutes=minutes, steps=args.steps,
                         limit=6000 if stage == "pose" else 3000, resume=args.resume,
                         reframed=3000 if stage == "pose" else 0, **({"lr": args.lr} if args.lr else {}))
    elif stage == "lora":
        from training.train_lora import train_lora

        train_lora(run, seed=args.seed, minutes=minutes, steps=args.steps, **({"lr": args.lr} if args.lr else {}))
    elif stage == "ship":
        from training.ship import ship

        for path in ship(run, args.builtin, dtype=args.dtype):
            print(path)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse(sys.argv[1:] if argv is None else argv)
    setup_threads(args.threads)
    stages = STAGES[:-1] if args.stage == "all" else (args.stage,)
    for stage in stages:
        run_stage(stage, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
