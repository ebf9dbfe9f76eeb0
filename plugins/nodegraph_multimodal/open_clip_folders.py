"""open_clip model folders (`open_clip_config.json` + `open_clip_model.safetensors`), read as a transformers
`CLIPModel` + `CLIPProcessor`, so clip.score computes on them what it computes on a CLIPModel folder.

Why convert rather than run open_clip: open_clip imports torchvision, which cannot be installed beside
this project's torch; and once converted, an open_clip model is an ordinary CLIPModel to every node.
What is converted: the weights, by renaming OpenAI's layout (`visual.transformer.resblocks.N.attn.
in_proj_weight` ...) into CLIPModel's (q/k/v split, the two projections transposed) — no arithmetic;
the tokenizer, OpenAI's BPE that nodegraph ships (`nodegraph_diffusion/clip_vocab`, MIT) as a
`CLIPTokenizer` with the config's context length; the image processor, a `CLIPImageProcessorPil` with
the config's mean, std, size and interpolation. The conversion happens once per run, in the run's
resource cache (never written into the user's folder); which configs convert is open_clip_config.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nodegraph.api import InputError, NodeContext
from nodegraph_multimodal.open_clip_config import (
    CONFIG_FILE,
    OpenClipSpec,
    clip_config,
    image_processor_settings,
    read_open_clip_config,
)

# in open_clip's own order of preference (factory._find_checkpoint_in_dir)
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
# entries old OpenAI-style checkpoints carry that are not weights (open_clip's openai.py drops them too)
NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size")
# OpenAI block layout -> CLIPModel encoder layer layout (weight and bias each)
_BLOCK_PARTS = (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"))


def is_open_clip_folder(folder: Path) -> bool:
    """An open_clip folder, not a transformers one: open_clip_config.json and no config.json (laion's hub
    folders hold both layouts; then transformers' own files are read, as they are)."""
    return folder.is_dir() and (folder / CONFIG_FILE).is_file() and not (folder / "config.json").is_file()


def weights_file(folder: Path, ctx: NodeContext, field: str = "path") -> Path:
    """The folder's weights (safetensors first); a pickle is refused unless the run allows pickles."""
    from nodegraph_diffusion.loading import refuse_pickle

    found = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not found:
        raise InputError(f"'{folder}' has {CONFIG_FILE} but no weights ({' or '.join(WEIGHT_FILES[:3])})",
                         field=field)
    refuse_pickle(found[0], ctx, field)
    return found[0]


def check_open_clip_folder(folder: Path, ctx: NodeContext) -> OpenClipSpec:
    """What clip.load checks before naming the model: a config CLIPModel expresses, and readable weights."""
    spec = read_open_clip_config(folder)
    weights_file(folder, ctx)
    return spec


def open_clip_keys(spec: OpenClipSpec) -> list[str]:
    """The state-dict keys open_clip's `CLIP` has for the spec, in its order."""

    def blocks(prefix: str, layers: int) -> list[str]:
        parts = ("ln_1", "attn.out_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
        return [f"{prefix}transformer.resblocks.{i}.{p}.{t}" for i in range(layers)
                for p in ("attn.in_proj", *parts) for t in ("weight", "bias")]

    rename = {"attn.in_proj.weight": "attn.in_proj_weight", "attn.in_proj.bias": "attn.in_proj_bias"}

    def fix(key: str) -> str:
        head, _, tail = key.rpartition(".resblocks.")
        index, _, rest = tail.partition(".")
        return f"{head}.resblocks.{index}.{rename.get(rest, rest)}"

    visual = ["visual.class_embedding", "visual.positional_embedding", "visual.proj", "visual.conv1.weight",
              "visual.ln_pre.weight", "visual.ln_pre.bias", *map(fix, blocks("visual.", spec.vision.layers)),
              "visual.ln_post.weight", "visual.ln_post.bias"]
    text = ["positional_embedding", "text_projection", "logit_scale", *map(fix, blocks("", spec.text.layers)),
            "token_embedding.weight", "ln_final.weight", "ln_final.bias"]
    return visual + text


def _tower(state: dict[str, Any], source: str, target: str, layers: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i in range(layers):
        src, dst = f"{source}transformer.resblocks.{i}.", f"{target}encoder.layers.{i}."
        weights = state[src + "attn.in_proj_weight"].chunk(3)
        biases = state[src + "attn.in_proj_bias"].chunk(3)
        for name, weight, bias in zip("qkv", weights, biases, strict=True):
            out[f"{dst}self_attn.{name}_proj.weight"] = weight.contiguous()
            out[f"{dst}self_attn.{name}_proj.bias"] = bias.contiguous()
        for ours, theirs in _BLOCK_PARTS:
            for t in ("weight", "bias"):
                out[f"{dst}{theirs}.{t}"] = state[f"{src}{ours}.{t}"]
    return out


def to_clip_state(state: dict[str, Any], spec: OpenClipSpec, file: Path, field: str = "clip",
                  ) -> dict[str, Any]:
    """open_clip's state dict in CLIPModel's names; InputError naming missing or unexpected keys."""
    if state and all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel model
        state = {k[len("module."):]: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k not in NOT_WEIGHTS}
    expected = open_clip_keys(spec)
    missing = [k for k in expected if k not in state]
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        listed = "; ".join(f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                           for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
        raise InputError(f"'{file}' does not match its {CONFIG_FILE} ({listed})", field=field)
    out = {**_tower(state, "visual.", "vision_model.", spec.vision.layers),
           **_tower(state, "", "text_model.", spec.text.layers)}
    embeddings = {"vision_model.embeddings.class_embedding": "visual.class_embedding",
                  "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
                  "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
                  "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                  "text_model.embeddings.position_embedding.weight": "positional_embedding"}
    out.update({ours: state[theirs] for ours, theirs in embeddings.items()})
    for t in ("weight", "bias"):
        out[f"vision_model.pre_layrnorm.{t}"] = state[f"visual.ln_pre.{t}"]
        out[f"vision_model.post_layernorm.{t}"] = state[f"visual.ln_post.{t}"]
        out[f"text_model.final_layer_norm.{t}"] = state[f"ln_final.{t}"]
    # open_clip multiplies `x @ proj`; CLIPModel's Linear computes `x @ weight.T`
    out["visual_projection.weight"] = state["visual.proj"].t().contiguous()
    out["text_projection.weight"] = state["text_projection"].t().contiguous()
    out["logit_scale"] = state["logit_scale"].reshape(())  # nonscalar_logit_scale saves shape [1]
    return out


def open_clip_processor(spec: OpenClipSpec) -> Any:
    """A `CLIPProcessor` for the spec: OpenAI's BPE tokenizer (context length from the config) and a
    `CLIPImageProcessorPil` (resize the short side + centre crop, or squash) with its mean and std."""
    from nodegraph_diffusion.clip_tokenizer import sd15_clip_tokenizer
    from transformers import CLIPImageProcessorPil, CLIPProcessor

    # pads with <|endoftext|>, where open_clip pads with 0 ("!"): the text tower is causal and pools at
    # the first EOS, so padding never reaches the features; a "!" pad token would split "!!" (id 748) into
    # two special tokens
    tokenizer = sd15_clip_tokenizer()
    tokenizer.model_max_length = spec.context_length
    return CLIPProcessor(image_processor=CLIPImageProcessorPil(**image_processor_settings(spec)),
                         tokenizer=tokenizer)


def load_open_clip_model(folder: Path, ctx: NodeContext, field: str = "clip") -> Any:
    """The open_clip folder's weights renamed into a transformers CLIPModel (eval mode)."""
    import transformers
    from nodegraph_diffusion.loading import read_state_dict

    from nodegraph_multimodal.models import quiet_transformers

    spec = read_open_clip_config(folder)
    file = weights_file(folder, ctx, field)
    config = transformers.CLIPConfig(**clip_config(spec))
    state = to_clip_state(read_state_dict(file, ctx, field), spec, file, field)
    with quiet_transformers():
        try:
            model = transformers.CLIPModel.from_pretrained(None, config=config, state_dict=state)
        except (RuntimeError, ValueError) as exc:  # shapes that contradict the config
            raise InputError(f"'{file}' does not match its {CONFIG_FILE}: {exc}", field=field) from exc
    return model.eval()


@contextmanager
def use_open_clip(ctx: NodeContext, path: str, fingerprint: str, field: str = "clip",
                  ) -> Iterator[tuple[Any, Any]]:
    """(processor, model) as `models.use_model` gives them: converted once per run, kept resident."""
    folder = Path(path)

    def load_processor() -> Any:
        return open_clip_processor(read_open_clip_config(folder))

    def load_model() -> Any:
        return load_open_clip_model(folder, ctx, field)

    with ctx.resources.use(f"{fingerprint}:open_clip:processor", load_processor) as processor, \
            ctx.resources.use(f"{fingerprint}:open_clip:CLIPModel", load_model, device=ctx.device,
                              dtype=ctx.dtype) as model:
        yield processor, model
