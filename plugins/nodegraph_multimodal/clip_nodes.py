"""CLIP nodes: load a CLIP model folder, score images against texts, keep the best images of a batch.

`clip.score` is CLIPModel's own forward (`logits_per_image`: cosine similarity times the learned logit
scale) on what the folder's CLIPProcessor makes of the images and texts, so a score equals the one a
transformers user computes. An open_clip folder is converted to a CLIPModel + CLIPProcessor as it loads
(open_clip_folders.py), so the nodes past clip.load never see the difference. A catalogue module: torch
and transformers are imported inside the bodies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NamedTuple

from pydantic import Field

from nodegraph.api import Image, InputError, NodeContext, OutputFile, node
from nodegraph_multimodal.types import ClipModelHandle, ClipRef, Scores


@node("clip.load", version="1.1.0")
def load(
    ctx: NodeContext,
    path: Annotated[ClipRef, Field(description="A transformers CLIPModel folder with its processor files "
                                               "(e.g. openai/clip-vit-base-patch32 saved locally), an "
                                               "open_clip folder (open_clip_config.json + "
                                               "open_clip_model.safetensors, e.g. laion's CLIP-ViT-H-14 "
                                               "saved locally; a .bin needs --allow-pickle), or "
                                               "builtin:tinyclip (trained on the demo scenes)")],
) -> ClipModelHandle:
    """Name a CLIP model (CLIPModel + CLIPProcessor folder, or open_clip folder) for clip.score.

    Weights load when a scoring node runs; an open_clip folder is converted to a CLIPModel then. An
    open_clip architecture CLIPModel cannot express (timm/ConvNeXt/HF text towers, attentional pooling,
    layer scale, CoCa, SigLIP...) is an error on `path` naming the config key, before any weights load."""
    from nodegraph_diffusion.paths import fingerprint_path, resolve_model_ref

    from nodegraph_multimodal.models import check_model_folder, read_config
    from nodegraph_multimodal.open_clip_config import CONFIG_FILE
    from nodegraph_multimodal.open_clip_folders import check_open_clip_folder, is_open_clip_folder

    folder = resolve_model_ref(str(path), ctx, kind="clip")
    if is_open_clip_folder(folder):
        check_open_clip_folder(folder, ctx)
        return ClipModelHandle(str(folder.resolve()), fingerprint_path(folder), layout="open_clip")
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise InputError(f"'{folder}' is neither a transformers CLIP folder (no config.json) nor an "
                         f"open_clip one (no {CONFIG_FILE})", field="path")
    check_model_folder(folder, "CLIP", "CLIPModel")
    model_type = read_config(folder).get("model_type")
    if model_type != "clip":
        raise InputError(f"'{folder}' is not a CLIP model (config.json model_type is {model_type!r}, "
                         "expected 'clip')", field="path")
    return ClipModelHandle(str(folder.resolve()), fingerprint_path(folder))


@contextmanager
def _use_clip(ctx: NodeContext, clip: ClipModelHandle) -> Iterator[tuple[Any, Any]]:
    """(processor, CLIPModel) of the handle, whichever layout its folder has."""
    from nodegraph_multimodal.models import use_model
    from nodegraph_multimodal.open_clip_folders import use_open_clip

    if clip.layout == "open_clip":
        with use_open_clip(ctx, clip.path, clip.fingerprint, field="clip") as pair:
            yield pair
    else:
        with use_model(ctx, clip.path, clip.fingerprint, "CLIPModel", field="clip") as pair:
            yield pair


@node("clip.score", version="1.1.0")
def score(
    ctx: NodeContext,
    clip: Annotated[ClipModelHandle, Field(description="The CLIP model (clip.load)")],
    image: Annotated[Image, Field(description="Images to score (a batch)")],
    texts: Annotated[list[str], Field(min_length=1, description="Texts to score every image against")],
) -> Scores:
    """Similarity of every image with every text: CLIPModel's logits_per_image, shape (images, texts).

    A text longer than the model's context (77 tokens for most) is cut to it with EOS last, as open_clip's
    `tokenize` and the tokenizer's own `truncation=True` do, instead of overrunning the position table."""
    import torch

    from nodegraph_multimodal.models import to_pil

    with _use_clip(ctx, clip) as (processor, model):
        inputs = processor(text=list(texts), images=to_pil(image), return_tensors="pt", padding=True,
                           truncation=True)
        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.no_grad():
            logits = model(**inputs).logits_per_image
    return Scores(values=logits.detach().to("cpu", torch.float32), texts=tuple(texts))



@node("clip.score_image", version="1.0.0")
def score_image(
    ctx: NodeContext,
    clip: Annotated[ClipModelHandle, Field(description="The CLIP model (clip.load)")],
    image: Annotated[Image, Field(description="Images to score (a batch)")],
    reference: Annotated[Image, Field(description="Reference images (a batch): one score column each")],
) -> Scores:
    """Likeness of every image to every reference image, on the scale clip.score uses.

    The cosine of CLIPModel's image features times its logit scale: clip.rank then keeps the images
    nearest a reference (a style or subject to stay close to), the way it keeps those nearest a prompt."""
    import torch
    from transformers.models.clip.modeling_clip import _get_vector_norm

    from nodegraph_multimodal.models import to_pil

    with _use_clip(ctx, clip) as (processor, model):
        device = next(model.parameters()).device

        def features(batch: Image) -> torch.Tensor:
            pixels = processor(images=to_pil(batch), return_tensors="pt")["pixel_values"]
            embeds = model.get_image_features(pixel_values=pixels.to(device, model.dtype))
            embeds = getattr(embeds, "pooler_output", embeds)  # transformers 5 returns an output object
            return embeds / _get_vector_norm(embeds)

        with torch.no_grad():  # CLIPModel.forward's order, references in the texts' place
            values = (torch.matmul(features(reference), features(image).t()) * model.logit_scale.exp()).t()
    labels = tuple(reference.labels) if reference.labels else ()
    columns = labels or tuple(f"reference {i}" for i in range(reference.batch))
    return Scores(values=values.detach().to("cpu", torch.float32), texts=columns)

class Ranked(NamedTuple):
    image: Image
    scores: list[float]
    indices: list[int]


@node("clip.rank", version="1.0.0")
def rank(
    image: Annotated[Image, Field(description="The batch the scores were computed on")],
    scores: Annotated[Scores, Field(description="clip.score of these images")],
    top_k: Annotated[int, Field(ge=1, le=4096, description="How many images to keep (fewer if the batch "
                                                          "is smaller)")] = 4,
    text: Annotated[int, Field(ge=-1, description="Which text's column ranks them (-1: the mean over "
                                                  "texts)")] = 0,
) -> Ranked:
    """Keep the top-k images of a batch by CLIP score, best first, labelled with their scores.

    The kept images carry labels `rank1_img3_24.81` (for `core.save_image`'s `{label}`, and the contact
    sheet); the scores and original batch indices are outputs (clip.save_scores writes and reports them)."""
    import torch

    values = scores.values
    if int(values.shape[0]) != image.batch:
        raise InputError(f"the scores are for {int(values.shape[0])} images, the batch has {image.batch}",
                         field="scores")
    if text >= int(values.shape[1]):
        raise InputError(f"text {text} is out of range: the scores have {int(values.shape[1])} texts",
                         field="text")
    column = values.mean(dim=1) if text < 0 else values[:, text]
    # stable: equal scores keep batch order
    order = sorted(range(len(column)), key=lambda i: (-float(column[i]), i))[:top_k]
    kept = [float(column[i]) for i in order]
    labels = tuple(f"rank{n + 1}_img{i}_{s:.2f}" for n, (i, s) in enumerate(zip(order, kept, strict=True)))
    pixels = image.pixels[torch.tensor(order, dtype=torch.long)].contiguous()
    return Ranked(Image(pixels=pixels, labels=labels), kept, order)


@node("clip.contact_sheet", version="1.0.0")
def contact_sheet(
    image: Annotated[Image, Field(description="Images to lay out (their labels are written under them)")],
    columns: Annotated[int, Field(ge=1, le=64, description="Images per row")] = 4,
    label_height: Annotated[int, Field(ge=0, le=128, description="Pixels of text strip under each image, "
                                                                 "wrapped (0: no labels)")] = 24,
) -> Image:
    """One image of a batch in a grid, each with its label (clip.rank's scores) under it."""
    from nodegraph_multimodal.contact import grid

    return grid(image, columns, label_height)


@node("clip.save_scores", version="1.1.0", side_effects=True)
def save_scores(
    ctx: NodeContext,
    scores: Annotated[list[float], Field(description="Scores of the kept images, best first (clip.rank)")],
    indices: Annotated[list[int], Field(description="Their indices in the scored batch (clip.rank)")],
    path: Annotated[OutputFile, Field(description="JSON file inside the output folder")] = "scores.json",
) -> str:
    """Write the ranking as JSON and say it in the run report; the best score is the run's score.

    A sweep keeps that score in its manifest and ranks variants by it (`nodegraph run ... --sweep
    seed=1..8 --rank-by NODE`). A side-effect node, so it runs (and reports) on every run, also when the
    ranking came from the cache."""
    import json

    if len(scores) != len(indices):
        raise InputError(f"{len(scores)} scores for {len(indices)} indices", field="indices")
    pairs = zip(indices, scores, strict=True)
    rows = [{"rank": n + 1, "index": i, "score": s} for n, (i, s) in enumerate(pairs)]
    ctx.note("kept " + ", ".join(f"#{r['rank']} image {r['index']} score {r['score']:.4f}" for r in rows))
    if rows:
        ctx.score(rows[0]["score"])  # the run's figure: a sweep ranks its variants by it (--rank-by)
    target = ctx.output_path(str(path))
    try:
        with open(target, "x", encoding="utf-8") as file:  # a new file only (see core.save_image)
            json.dump(rows, file, indent=1)
    except OSError as exc:
        raise InputError(f"cannot write '{path}': {exc.strerror or exc}", field="path") from exc
    return str(path)
