"""Speed options (`--optimize LEVEL` or `runtime: {optimize: LEVEL}`), applied to resident models.

Levels (each includes the ones before):
- `none`: the model as loaded; results equal diffusers' pipelines bit for bit on CPU fp32.
- `basic`: channels-last memory format (UNet and VAE) and fused QKV projections (diffusers'
  `fuse_qkv_projections`; skipped while LoRA adapters are loaded, which wrap the separate q/k/v, and
  for GGUF/fp8-stored weights, which a fused plain layer could not compute with).
  Attention already runs through PyTorch SDPA (diffusers' default `AttnProcessor2_0`, kept), and
  classifier-free guidance is already one UNet call on a `[uncond, cond]` batch (`sampling.run_loop`).
- `compile`: also `torch.compile` of the UNet and of the VAE's decode (made once per resident model and
  reused by later runs in the process; inductor's on-disk cache shortens compiles in later processes).
  The one-time cost — the first call of each — is measured and reported as a note. Tiled decoding
  (and its out-of-memory fallback) runs the VAE eagerly. For GPUs: on the CPU compiling costs minutes
  for a few percent (see `nodegraph.runtime.advice`), so a run there is warned and `basic` recommended.
- `max`: compile with `mode="max-autotune"` on CUDA (autotuned kernels and CUDA graphs for the fixed
  shapes); like `compile` elsewhere.

The resident module is shared by every graph in the process, so the state it is in (memory format,
fused or not) is *set on every use* to what this run asks for: a later run at `none` gets the
unfused, contiguous model back, with the exact same outputs as before (the original q/k/v weights are
never changed; unfusing restores the original attention processors).

Outside `none`, outputs differ from eager by float rounding only: on CPU fp32 the tests hold max abs
pixel difference <= 1e-4 (channels-last changes convolution summation order; fusing does not change
results on CPU).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from nodegraph.runtime.advice import compile_advice

LEVELS = ("none", "basic", "compile", "max")
BACKEND_ENV = "NODEGRAPH_COMPILE_BACKEND"  # e.g. aot_eager in tests: no C++ toolchain needed, fast
_STATE = "_nodegraph_optimized"  # (channels_last, fused) the module is in now


def level_at_least(level: str, wanted: str) -> bool:
    """Whether `level` includes the options of `wanted` (unknown levels count as none)."""
    rank = {name: i for i, name in enumerate(LEVELS)}
    return rank.get(level, 0) >= rank[wanted]


def has_adapters(model: Any) -> bool:
    """Whether peft LoRA adapters are loaded into the module (fusing would bypass them)."""
    return bool(getattr(model, "peft_config", None))


def stored_apart(model: Any) -> bool:
    """Whether weights are stored in another dtype than they compute in (GGUF-quantized, or fp8 under
    layerwise casting: transformer_files.py). Fusing q/k/v would concatenate the stored weights into a
    plain layer that cannot compute with them (diffusers' fuse_qkv_projections fails on both)."""
    compute = getattr(model, "dtype", None)
    return any(not p.is_floating_point() or p.dtype != compute for p in model.parameters())


def set_state(model: Any, channels_last: bool, fused: bool) -> None:
    """Bring a resident module to the asked memory format and QKV fusion, from whatever state it is in."""
    now = getattr(model, _STATE, (False, False))
    if now == (channels_last, fused):
        return
    if now[0] != channels_last:
        model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if now[1] != fused and hasattr(model, "fuse_qkv_projections"):
        if fused:
            model.fuse_qkv_projections()
        else:
            model.unfuse_qkv_projections()
    object.__setattr__(model, _STATE, (channels_last, fused))


class TimedFirstCall:
    """Wraps a compiled module: times its first call (the compile) and reports it once via `ctx.note`.

    Attribute access goes to the original module, so code reading `unet.config` or calling
    `unet.set_attn_processor` works as with the plain module.
    """

    def __init__(self, compiled: Any, original: Any, what: str) -> None:
        self._compiled = compiled
        self._original = original
        self._what = what
        self.compile_s: float | None = None
        self.ctx: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compile_s is not None:
            return self._compiled(*args, **kwargs)
        start = time.perf_counter()
        out = self._compiled(*args, **kwargs)
        self.compile_s = time.perf_counter() - start
        if self.ctx is not None:
            self.ctx.note(f"compiled the {self._what} in {self.compile_s:.1f} s (one-time cost, reused by "
                          "later runs in this process)")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class CompiledDecode:
    """A VAE whose `decode` is compiled (first call timed like the UNet's); everything else is the VAE's own,
    so tiled decoding and `vae.config` / `vae.parameters()` see the plain module."""

    def __init__(self, vae: Any, level: str, device: Any) -> None:
        self._vae = vae
        self.decode = TimedFirstCall(_compile(vae.decode, level, device), vae.decode, "VAE decoder")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vae, name)


def _compile(model: Any, level: str, device: Any) -> Any:
    backend = os.environ.get(BACKEND_ENV, "inductor")
    mode = "max-autotune" if level == "max" and getattr(device, "type", "") == "cuda" else None
    return torch.compile(model, backend=backend, mode=mode, fullgraph=False, dynamic=False)


def prepare_unet(ctx: Any, key: str, unet: Any) -> Any:
    """The UNet to call at this run's optimize level (the module itself, or a compiled wrapper)."""
    level = getattr(ctx, "optimize", "none")
    basic = level_at_least(level, "basic")
    fuse = basic and not has_adapters(unet) and not stored_apart(unet)
    if basic and not fuse:
        ctx.note("fused QKV skipped: " + ("LoRA adapters are loaded into this UNet" if has_adapters(unet) else
                                          "its weights are stored quantized or in fp8"))
    set_state(unet, channels_last=basic, fused=fuse)
    if not level_at_least(level, "compile"):
        return unet
    device = next(unet.parameters()).device
    wrapper: TimedFirstCall = ctx.resources.derived(
        key, f"compiled:{level}:{int(fuse)}", lambda m: TimedFirstCall(_compile(m, level, device), m, "UNet"))
    wrapper.ctx = ctx
    advice = compile_advice(level, device.type)
    if advice is not None and wrapper.compile_s is None:  # not compiled yet: this run pays for it
        ctx.note(advice)  # (the CLI says it before the run starts too)
    return wrapper


def prepare_vae(ctx: Any, key: str, vae: Any) -> Any:
    """The VAE at this run's level: channels-last from `basic` on, a compiled `decode` from `compile` on."""
    level = getattr(ctx, "optimize", "none")
    set_state(vae, channels_last=level_at_least(level, "basic"), fused=False)
    if not level_at_least(level, "compile"):
        return vae
    device = next(vae.parameters()).device
    wrapper: CompiledDecode = ctx.resources.derived(key, f"compiled:{level}",
                                                    lambda m: CompiledDecode(m, level, device))
    wrapper.decode.ctx = ctx
    return wrapper
